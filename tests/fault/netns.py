"""What the fault scenarios (vanish.py, mesh_cut.py) share: two network namespaces made for one
run and joined by a veth pair, the processes a scenario started (killed by pid on the way out),
and the rule for a machine where namespaces cannot be made: exit 77, CTest's SKIP_RETURN_CODE,
or 1, a failure, when SOCKPAT_REQUIRE_NETNS=1, as .ci/run sets (it runs as root).
"""
import os
import shutil
import signal
import subprocess
import sys

SKIP = 77
TIMEOUT = 20
started = []  # processes the scenario started: killed by pid on the way out


def sh(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT, check=check)


def expect(cond, what, *details):
    if not cond:
        raise AssertionError(what + ''.join('\n  ' + str(d) for d in details))


class VethPair:
    """Namespaces `names`, each holding one end (`devices`) of a veth pair with an address of a
    /30 (`addresses`), loopback up. The names should carry the pid; an interface name has at
    most 15 characters."""

    def __init__(self, names, devices, addresses):
        self.names, self.devices, self.addresses = names, devices, addresses

    @classmethod
    def for_this_run(cls, tag, subnet):
        """Namespaces sockpat-TAGa-PID and sockpat-TAGb-PID, devices spTAGaPID and spTAGbPID,
        addresses SUBNET.1 and SUBNET.2."""
        pid = os.getpid()
        return cls(('sockpat-%sa-%d' % (tag, pid), 'sockpat-%sb-%d' % (tag, pid)),
                   ('sp%sa%d' % (tag, pid), 'sp%sb%d' % (tag, pid)), (subnet + '.1', subnet + '.2'))

    def make(self):
        for ns in self.names:
            sh('ip', 'netns', 'add', ns)
        sh('ip', 'link', 'add', self.devices[0], 'netns', self.names[0], 'type', 'veth', 'peer', 'name',
           self.devices[1], 'netns', self.names[1])
        for ns, dev, addr in zip(self.names, self.devices, self.addresses):
            sh('ip', '-n', ns, 'addr', 'add', addr + '/30', 'dev', dev)
            sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
            sh('ip', '-n', ns, 'link', 'set', dev, 'up')

    def set_link(self, side, up):
        """Sets one end down (nothing crosses any more, no FIN, no RST) or up again."""
        sh('ip', '-n', self.names[side], 'link', 'set', self.devices[side], 'up' if up else 'down')

    def remove(self):
        for ns in self.names:
            subprocess.run(['ip', 'netns', 'del', ns], capture_output=True, timeout=TIMEOUT)


def stop_started():
    for p in started:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                pass


def run_scenario(pair, scenario):
    """Makes `pair`, runs `scenario()`, and always removes the namespaces and stops what was
    started; returns the exit status (0, or the skip status where namespaces cannot be made)."""
    required = os.environ.get('SOCKPAT_REQUIRE_NETNS') == '1'
    skip, word = (1, 'FAILED (SOCKPAT_REQUIRE_NETNS=1)') if required else (SKIP, 'SKIPPED')
    if os.name != 'posix' or shutil.which('ip') is None:
        print(word + ': needs Linux network namespaces and iproute2')
        return skip
    if os.geteuid() != 0:
        print(word + ': creating network namespaces needs root (CAP_NET_ADMIN); .ci/run runs as root')
        return skip

    def on_signal(signum, _frame):
        stop_started()
        pair.remove()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        try:
            pair.make()
        except subprocess.CalledProcessError as e:
            print(word + ': cannot create network namespaces here: %s' % (e.stderr or e).strip())
            return skip
        scenario()
    finally:
        stop_started()
        pair.remove()
    return 0
