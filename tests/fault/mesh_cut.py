"""A mesh node whose link is cut without FIN or RST: its packets just stop. The others must
declare it dead within the peer liveness timeout, go on talking, and link it again once the cut
heals, without a restart.

Usage: mesh_cut.py MESH_CHAT_BINARY [RUNNER...]

Two network namespaces made for this run (names carry the pid) joined by a veth pair: mesh_chat
nodes n0 and n1 in one, n2 in the other. Once all three are linked and have heard each other,
n2's veth end is set down while every process lives on, so nothing more crosses. n0 and n1 must
report n2 "left ... (timed out)" after about the default liveness timeout (5 s), and n2 the
same of them; n0 and n1 still hear each other. Then the link is set up again: the redials link
n2 back and its line reaches both. The namespaces are always removed.
Without the privilege to make namespaces (not root, no `ip`), exits 77: CTest's SKIP_RETURN_CODE
(1, a failure, when SOCKPAT_REQUIRE_NETNS=1, as .ci/run sets).
"""
import subprocess
import sys
import threading
import time

import netns  # this folder: the namespaces, the skip rule
from netns import TIMEOUT, expect, started

LIVENESS_S = 5.0  # PeerOptions::liveness_timeout's default, which mesh_chat keeps
PAIR = netns.VethPair.for_this_run('m', '10.212.0')
NS_A, NS_B = PAIR.names
ADDR_A, ADDR_B = PAIR.addresses


class Lines:
    """The lines a stream carries, collected on a thread of their own so that every wait is bounded."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip('\n'))
                self.cond.notify_all()

    def wait_for(self, predicate, timeout=TIMEOUT):
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.lines), timeout)


class Node:
    def __init__(self, binary, runner, ns, addr, name, join=None):
        argv = runner + [binary, '--listen', addr + ':0', '--name', name, '--wait-peers', '2', '--timeout', '15']
        if join:
            argv += ['--join', join]
        self.proc = subprocess.Popen(['ip', 'netns', 'exec', ns] + argv, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(self.proc)
        line = self.proc.stdout.readline()
        expect(line.startswith('listening on '), name + ' prints listening first', line)
        self.endpoint = line.split()[-1]
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)
        self.name = name

    def say(self, text):
        self.proc.stdin.write(text + '\n')
        self.proc.stdin.flush()

    def hears(self, line, what):
        expect(self.out.wait_for(lambda lines: line in lines), '%s hears %r (%s)' % (self.name, line, what),
               self.out.lines, self.err.lines)

    def id_of(self, endpoint):
        """The node id this node printed as "joined ID ENDPOINT" for `endpoint`."""
        def joined(lines):
            return [l.split()[1] for l in lines if l.startswith('joined ') and l.endswith(' ' + endpoint)]
        # Standard error is its own pipe: the line may come after what standard output showed.
        expect(self.err.wait_for(lambda lines: joined(lines)), '%s reports the node at %s joined' % (self.name, endpoint),
               self.err.lines)
        return joined(self.err.lines)[0]


def run(binary, runner):
    n0 = Node(binary, runner, NS_A, ADDR_A, 'n0')
    n1 = Node(binary, runner, NS_A, ADDR_A, 'n1', n0.endpoint)
    n2 = Node(binary, runner, NS_B, ADDR_B, 'n2', n0.endpoint)
    nodes = (n0, n1, n2)
    for n in nodes:
        n.say('hello from ' + n.name)
    for n in nodes:
        for other in nodes:
            if other is not n:
                n.hears('%s: hello from %s' % (other.name, other.name), 'before the cut')
    id2 = n0.id_of(n2.endpoint)
    id0 = n2.id_of(n0.endpoint)

    # The cut: every process and socket lives on, but no packet crosses any more.
    PAIR.set_link(1, up=False)
    cut = time.monotonic()
    for n in (n0, n1):
        expect(n.err.wait_for(lambda lines: 'left %s (timed out)' % id2 in lines),
               '%s declares n2 dead, timed out' % n.name, n.err.lines)
    dead_after = time.monotonic() - cut
    expect(n2.err.wait_for(lambda lines: 'left %s (timed out)' % id0 in lines),
           'n2 declares n0 dead, timed out', n2.err.lines)
    expect(LIVENESS_S * 0.9 <= dead_after <= LIVENESS_S + 5, 'n2 is declared dead after about the liveness timeout',
           dead_after)
    n0.say('during the cut')
    n1.hears('n0: during the cut', 'the others keep talking')

    # The heal: the redials on both sides link n2 again.
    PAIR.set_link(1, up=True)
    healed = time.monotonic()
    for n in (n0, n1):
        expect(n.err.wait_for(lambda lines: sum(1 for l in lines if l.startswith('joined %s ' % id2)) == 2),
               '%s links n2 again after the heal' % n.name, n.err.lines)
    relinked_after = time.monotonic() - healed
    n2.say('after the cut')
    n0.hears('n2: after the cut', 'after the heal')
    n1.hears('n2: after the cut', 'after the heal')

    for n in nodes:
        n.proc.stdin.close()
    for n in nodes:
        n.proc.wait(TIMEOUT)
        expect(n.proc.returncode == 0, n.name + ' exits 0 at the end of its input', n.proc.returncode, n.err.lines)
    for n in (n0, n1):
        expect(n.out.lines.count('n2: after the cut') == 1, n.name + ' hears n2 once after the heal', n.out.lines)
    print('n2 declared dead %.2f s after the cut (liveness timeout %.0f s); linked again %.2f s after the heal'
          % (dead_after, LIVENESS_S, relinked_after))


def main():
    binary = sys.argv[1]
    runner = [a for a in sys.argv[2:] if a]
    return netns.run_scenario(PAIR, lambda: run(binary, runner))


if __name__ == '__main__':
    sys.exit(main())
