# Shell helpers shared by the scripts in this folder. Each script does
#   cd "$(dirname "$0")/.." && . scripts/lib.sh
# (a library: nothing here runs by itself).

# A free TCP port on loopback (the OS picks it).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# need COMMAND PACKAGE: installs the Debian PACKAGE when COMMAND is missing.
need() {
  command -v "$1" >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
}

# installed PACKAGE: whether dpkg has PACKAGE installed.
installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}
