#!/usr/bin/env python3
"""Makes the TLS tests' certificates with the openssl command-line tool, into one directory.

usage: make_certs.py OUT_DIR

Everything is made fresh at test time (EC P-256 keys, so it is quick); no key is ever committed.
  ca.pem                  the test CA (trusted by the tests)
  server.pem, server.key  localhost, 127.0.0.1 and ::1, signed by the CA
  other.pem, other.key    a certificate for another host name (other.example), signed by the CA
  cn_only.pem, cn_only.key  CN=localhost and no subjectAltName, signed by the CA (names are in SANs only)
  ip_only.pem, ip_only.key  CN=localhost and only the IP SAN 127.0.0.1, signed by the CA
  expired.pem, expired.key  localhost, signed by the CA, expired in 2020
  rogue.pem, rogue.key    localhost, signed by a CA nobody trusts (rogue_ca.pem)
  self_signed.pem, self_signed.key  localhost, self-signed
  client.pem, client.key  a client certificate (CN=sockpat-test-client), signed by the CA
"""
import os
import subprocess
import sys
import tempfile


def run(*args, cwd):
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        sys.exit(f"make_certs.py: openssl {' '.join(args)} failed:\n{result.stderr}")


def key(name, cwd):
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name + ".key", cwd=cwd)


def ca(name, cwd):
    key(name, cwd)
    run("req", "-x509", "-new", "-key", name + ".key", "-out", name + ".pem", "-days", "30",
        "-subj", f"/O=sockpat tests/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


LEAF_CONFIG = """
[ca]
default_ca = test_ca
[test_ca]
database = {db}
new_certs_dir = {work}
serial = {serial}
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = {usage}
{san_line}
"""


def leaf(name, issuer, cn, san, usage, cwd, start=None, end=None, self_signed=False):
    key(name, cwd)
    with tempfile.TemporaryDirectory() as work:
        db = os.path.join(work, "index.txt")
        open(db, "w").close()
        serial = os.path.join(work, "serial")
        with open(serial, "w") as f:
            f.write(os.urandom(8).hex() + "\n")
        config = os.path.join(work, "ca.cnf")
        with open(config, "w") as f:
            san_line = f"subjectAltName = {san}" if san else ""
            f.write(LEAF_CONFIG.format(db=db, work=work, serial=serial, usage=usage, san_line=san_line))
        csr = os.path.join(work, name + ".csr")
        run("req", "-new", "-key", name + ".key", "-subj", f"/CN={cn}", "-out", csr, cwd=cwd)
        dates = ["-startdate", start, "-enddate", end] if start else ["-days", "30"]
        signer = ["-selfsign", "-keyfile", name + ".key"] if self_signed else ["-cert", issuer + ".pem",
                                                                              "-keyfile", issuer + ".key"]
        run("ca", "-batch", "-config", config, "-notext", "-extensions", "leaf", "-in", csr, "-out", name + ".pem",
            *signer, *dates, cwd=cwd)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_certs.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    local = "DNS:localhost,IP:127.0.0.1,IP:::1"
    ca("ca", out)
    ca("rogue_ca", out)
    leaf("server", "ca", "localhost", local, "serverAuth", out)
    leaf("other", "ca", "other.example", "DNS:other.example", "serverAuth", out)
    leaf("cn_only", "ca", "localhost", None, "serverAuth", out)
    leaf("ip_only", "ca", "localhost", "IP:127.0.0.1", "serverAuth", out)
    leaf("expired", "ca", "localhost", local, "serverAuth", out, start="20200101000000Z", end="20200201000000Z")
    leaf("rogue", "rogue_ca", "localhost", local, "serverAuth", out)
    leaf("self_signed", None, "localhost", local, "serverAuth", out, self_signed=True)
    leaf("client", "ca", "sockpat-test-client", "DNS:sockpat-test-client", "clientAuth", out)
    print(f"make_certs.py: certificates in {out}")


if __name__ == "__main__":
    main()
