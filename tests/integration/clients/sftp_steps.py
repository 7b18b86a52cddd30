#!/usr/bin/env python3
"""A scripted paramiko sFTP client for flagsync's end-to-end tests.

Usage: sftp_steps.py JSON

JSON is one object:
    {"host": "127.0.0.1", "port": 2222,
     "defaults": {"user": ..., "password": ..., "key": PATH, "bind": ADDR},
     "steps": [{"op": ..., "conn": "c", ...}, ...]}

Every step runs, in order, whatever happened to the ones before; each
gives one result object {"op", "ok", "error", "stage", "value"}. The whole
list is printed on stdout as one JSON object {"results": [...]}. A step
that needs a connection uses the one named by its "conn" (default "c");
"connect" opens it (TCP, SSH, authentication, the sftp subsystem) and
"close" / "abort" end it.

Operations (parameters besides "op" and "conn"):
  connect      user, password, key, bind (override "defaults"), sftp
               (default true; false: log in only, start no subsystem); value: the
               server's host key {"algorithm", "fingerprint"}; on failure
               "stage" says where: tcp, ssh, auth or sftp
  close        clean close of the connection
  abort        closes the TCP socket under an open connection (no SSH
               disconnect, no SFTP close): a client that drops mid-upload
  put          path, data | data_b64 | local, confirm (default false):
               paramiko's putfo (open, pipelined writes, close, and with
               confirm a stat of the uploaded file)
  write_open   path, data | data_b64, handle (a name), fsetstat (bool):
               opens for writing and writes, leaving the handle open
  write_more   handle, data: another write on an open handle
  write_close  handle: closes it (the server's "upload finished")
  get          path; value: the content (text, errors replaced)
  get_b64      path; value: the content, base64
  listdir      path; value: sorted names
  stat, lstat  path; value: {"size", "mode", "is_dir"}
  realpath     path; value: the answer
  chmod        path, mode
  utime        path, times ([atime, mtime]) or null for now
  rename       src, dst (SSH_FXP_RENAME)
  posix_rename src, dst (the posix-rename@openssh.com extension)
  hardlink     src, dst (the hardlink@openssh.com extension)
  symlink      target, path
  readlink     path
  remove       path
  mkdir        path
  rmdir        path
  exec         command; value: {"stdout", "stderr", "status"}
  shell        value: what the shell printed within a second
  direct_tcpip host, port (a local port forward)
  tcpip_forward port (a remote port forward)
  idle_tcp     seconds: a raw TCP connection that reads the server's
               banner and sends nothing; value: seconds until the server
               closed it, or null if still open after "seconds"
  garbage_tcp  data_hex, random (a count of random bytes sent after
               data_hex): a raw TCP connection that sends them (after
               reading the server's banner) and waits up to 5 s; value:
               seconds until the server closed it, or null
  raw_sftp     data_hex, random: opens a new channel on the connection,
               starts the sftp subsystem and sends the bytes as they are;
               value: how many bytes came back within 2 s
  open_many    path (with "{i}" for the handle's number), count, mode ("w":
               files for writing, "dir": folders): opens that many handles
               and leaves them open; value: {"opened": N, "errors":
               {message: how many}}
  open_mode    path, mode (paramiko's: "r+", "a", "w", ...), data: opens
               with that mode, reads what is there (unless the mode is
               "w" or "a"), writes data, closes; value: what was read
  open_channels count: opens that many session channels and leaves them
               open; value: how many opened before the first refusal
  close_channels closes the channels open_channels left open
  churn_channels count: opens and closes a session channel that many
               times; value: how many opened
  mark         local: writes that local file (tells the test a step is done)
  sleep        seconds
"""

import base64
import hashlib
import json
import socket
import sys
import time
import traceback

try:
    import paramiko
except ImportError as e:  # a missing tool is a test failure, with a message
    print(json.dumps({"fatal": f"paramiko is not installed: {e} "
                               "(scripts/test installs it with pip)"}))
    sys.exit(3)


TIMEOUT = 20.0


def fingerprint(key):
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_key(path):
    return paramiko.PKey.from_path(path)


def raw_bytes(step):
    import os
    return bytes.fromhex(step.get("data_hex", "")) + os.urandom(step.get("random", 0))


def data_of(step):
    if "data_b64" in step:
        return base64.b64decode(step["data_b64"])
    if "local" in step:
        with open(step["local"], "rb") as f:
            return f.read()
    return step.get("data", "").encode("utf-8")


def attrs(st):
    import stat as st_mod
    mode = st.st_mode if st.st_mode is not None else 0
    return {
        "size": st.st_size,
        "mode": mode,
        "is_dir": bool(st_mod.S_ISDIR(mode)),
        "is_link": bool(st_mod.S_ISLNK(mode)),
    }


class Conn:
    def __init__(self, sock, transport, sftp):
        self.sock = sock
        self.transport = transport
        self.sftp = sftp
        self.handles = {}
        self.channels = []


def connect(host, port, params):
    """Returns (Conn, host key) or raises (stage, message)."""
    stage = "tcp"
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        if params.get("bind"):
            sock.bind((params["bind"], 0))
        sock.connect((host, port))
        stage = "ssh"
        transport = paramiko.Transport(sock)
        transport.banner_timeout = TIMEOUT
        transport.auth_timeout = TIMEOUT
        transport.start_client(timeout=TIMEOUT)
        host_key = transport.get_remote_server_key()
        stage = "auth"
        user = params["user"]
        if params.get("key"):
            transport.auth_publickey(user, load_key(params["key"]))
        elif params.get("password") is not None:
            transport.auth_password(user, params["password"])
        else:
            transport.auth_none(user)
        if not transport.is_authenticated():
            raise RuntimeError("not authenticated")
        stage = "sftp"
        if params.get("sftp", True) is False:
            return Conn(sock, transport, None), {
                "algorithm": host_key.get_name(),
                "fingerprint": fingerprint(host_key),
            }
        sftp = paramiko.SFTPClient.from_transport(transport)
        sftp.get_channel().settimeout(TIMEOUT)
        return Conn(sock, transport, sftp), {
            "algorithm": host_key.get_name(),
            "fingerprint": fingerprint(host_key),
        }
    except Exception as e:  # noqa: BLE001 - every failure is a result
        try:
            sock.close()
        except Exception:  # noqa: BLE001
            pass
        raise StepFailure(stage, f"{type(e).__name__}: {e}")


class StepFailure(Exception):
    def __init__(self, stage, message):
        super().__init__(message)
        self.stage = stage
        self.message = message


def extended(sftp, name, *args):
    # paramiko has no public API for these OpenSSH extensions.
    from paramiko.sftp import CMD_EXTENDED
    sftp._request(CMD_EXTENDED, name, *[a.encode("utf-8") if isinstance(a, str) else a
                                         for a in args])


def idle_tcp(host, port, seconds):
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    start = time.monotonic()
    sock.settimeout(1.0)
    banner = b""
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            return round(time.monotonic() - start, 2), banner.decode("latin-1")
        if not chunk:
            return round(time.monotonic() - start, 2), banner.decode("latin-1")
        banner += chunk
    sock.close()
    return None, banner.decode("latin-1")


def run_step(host, port, defaults, conns, step):
    op = step["op"]
    name = step.get("conn", "c")
    if op == "connect":
        params = dict(defaults)
        for k in ("user", "password", "key", "bind", "sftp"):
            if k in step:
                params[k] = step[k]
        conn, host_key = connect(host, port, params)
        conns[name] = conn
        return host_key
    if op == "sleep":
        time.sleep(step["seconds"])
        return None
    if op == "mark":
        with open(step["local"], "w") as f:
            f.write("done\n")
        return None
    if op == "garbage_tcp":
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        sock.settimeout(5.0)
        start = time.monotonic()
        try:
            sock.recv(256)
            sock.sendall(raw_bytes(step))
            while time.monotonic() - start < 5.0:
                if not sock.recv(4096):
                    return round(time.monotonic() - start, 2)
        except (socket.timeout, OSError):
            if time.monotonic() - start < 5.0:
                return round(time.monotonic() - start, 2)
        finally:
            sock.close()
        return None
    if op == "idle_tcp":
        closed_after, banner = idle_tcp(host, port, step["seconds"])
        return {"closed_after": closed_after, "banner": banner}

    conn = conns.get(name)
    if conn is None:
        raise StepFailure("state", f"connection {name!r} is not open")
    sftp = conn.sftp

    if op == "close":
        del conns[name]
        sftp.close()
        conn.transport.close()
        return None
    if op == "abort":
        del conns[name]
        # Kill the socket under paramiko: no SSH_MSG_DISCONNECT, no
        # SSH_FXP_CLOSE for open handles.
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.sock.close()
        return None
    if op == "put":
        import io
        data = data_of(step)
        sftp.putfo(io.BytesIO(data), step["path"], file_size=len(data),
                   confirm=step.get("confirm", False))
        return len(data)
    if op == "write_open":
        f = sftp.open(step["path"], "wb")
        f.set_pipelined(False)
        data = data_of(step)
        if data:
            f.write(data)
            f.flush()
        if step.get("fsetstat"):
            f.chmod(0o644)
            f.utime((1_600_000_000, 1_600_000_000))
        conn.handles[step.get("handle", "h")] = f
        return len(data)
    if op == "open_mode":
        mode = step["mode"]
        with sftp.open(step["path"], mode) as f:
            before = b"" if mode[0] in "wa" else f.read()
            f.write(data_of(step))
        return before.decode("utf-8", errors="replace")
    if op == "open_many":
        opened, errors = 0, {}
        kept = conn.handles.setdefault("open_many", [])
        for i in range(step["count"]):
            path = step["path"].replace("{i}", str(i))
            try:
                if step.get("mode") == "dir":
                    handle = sftp._request(paramiko.sftp.CMD_OPENDIR, path)
                else:
                    handle = sftp.open(path, "wb")
                kept.append(handle)
                opened += 1
            except Exception as e:  # noqa: BLE001 - every failure is counted
                message = f"{type(e).__name__}: {e}"
                errors[message] = errors.get(message, 0) + 1
        return {"opened": opened, "errors": errors}
    if op == "write_more":
        f = conn.handles[step.get("handle", "h")]
        f.write(data_of(step))
        f.flush()
        return None
    if op == "write_close":
        f = conn.handles.pop(step.get("handle", "h"))
        f.close()
        return None
    if op == "get":
        with sftp.open(step["path"], "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    if op == "get_b64":
        with sftp.open(step["path"], "rb") as f:
            return base64.b64encode(f.read()).decode()
    if op == "listdir":
        return sorted(sftp.listdir(step["path"]))
    if op == "stat":
        return attrs(sftp.stat(step["path"]))
    if op == "lstat":
        return attrs(sftp.lstat(step["path"]))
    if op == "realpath":
        return sftp.normalize(step["path"])
    if op == "chmod":
        sftp.chmod(step["path"], step["mode"])
        return None
    if op == "utime":
        times = step.get("times")
        sftp.utime(step["path"], tuple(times) if times else None)
        return None
    if op == "rename":
        sftp.rename(step["src"], step["dst"])
        return None
    if op == "posix_rename":
        sftp.posix_rename(step["src"], step["dst"])
        return None
    if op == "hardlink":
        extended(sftp, "hardlink@openssh.com", step["src"], step["dst"])
        return None
    if op == "symlink":
        sftp.symlink(step["target"], step["path"])
        return None
    if op == "readlink":
        return sftp.readlink(step["path"])
    if op == "remove":
        sftp.remove(step["path"])
        return None
    if op == "mkdir":
        sftp.mkdir(step["path"])
        return None
    if op == "rmdir":
        sftp.rmdir(step["path"])
        return None
    if op == "exec":
        chan = conn.transport.open_session(timeout=TIMEOUT)
        chan.settimeout(5.0)
        chan.exec_command(step["command"])
        out, err = b"", b""
        try:
            while True:
                chunk = chan.recv(4096)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        try:
            while True:
                chunk = chan.recv_stderr(4096)
                if not chunk:
                    break
                err += chunk
        except socket.timeout:
            pass
        status = chan.recv_exit_status() if chan.exit_status_ready() else None
        chan.close()
        return {"stdout": out.decode("utf-8", "replace"),
                "stderr": err.decode("utf-8", "replace"), "status": status}
    if op == "shell":
        chan = conn.transport.open_session(timeout=TIMEOUT)
        chan.settimeout(1.0)
        chan.invoke_shell()
        chan.send(b"echo flagsync-shell-$((6*7))\n")
        out = b""
        try:
            while True:
                chunk = chan.recv(4096)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        chan.close()
        return out.decode("utf-8", "replace")
    if op == "raw_sftp":
        chan = conn.transport.open_session(timeout=TIMEOUT)
        chan.invoke_subsystem("sftp")
        try:
            chan.sendall(raw_bytes(step))
        except OSError:
            pass
        chan.settimeout(2.0)
        got = 0
        try:
            while True:
                chunk = chan.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
        except socket.timeout:
            pass
        chan.close()
        return got
    if op == "open_channels":
        opened = 0
        for _ in range(step["count"]):
            try:
                conn.channels.append(conn.transport.open_session(timeout=TIMEOUT))
            except paramiko.ChannelException:
                break
            opened += 1
        return opened
    if op == "close_channels":
        for chan in conn.channels:
            chan.close()
        conn.channels = []
        return None
    if op == "churn_channels":
        opened = 0
        for _ in range(step["count"]):
            chan = conn.transport.open_session(timeout=TIMEOUT)
            opened += 1
            chan.close()
        return opened
    if op == "direct_tcpip":
        chan = conn.transport.open_channel(
            "direct-tcpip", (step["host"], step["port"]), ("127.0.0.1", 40000),
            timeout=TIMEOUT)
        chan.close()
        return None
    if op == "tcpip_forward":
        port = conn.transport.request_port_forward("127.0.0.1", step.get("port", 0))
        return port
    raise StepFailure("script", f"unknown op {op!r}")


def main():
    spec = json.loads(sys.argv[1])
    host, port = spec.get("host", "127.0.0.1"), spec["port"]
    defaults = spec.get("defaults", {})
    conns = {}
    results = []
    for step in spec["steps"]:
        result = {"op": step["op"], "ok": True, "error": None, "stage": None, "value": None}
        try:
            result["value"] = run_step(host, port, defaults, conns, step)
        except StepFailure as e:
            result.update(ok=False, error=e.message, stage=e.stage)
        except Exception as e:  # noqa: BLE001 - every failure is a result
            result.update(ok=False, error=f"{type(e).__name__}: {e}", stage=step["op"])
        results.append(result)
    for conn in conns.values():
        try:
            conn.transport.close()
        except Exception:  # noqa: BLE001
            pass
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001
        print(json.dumps({"fatal": traceback.format_exc()}))
        sys.exit(3)
