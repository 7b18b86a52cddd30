"""Appends with asyncssh the way its users do: open(path, 'a') sends the
SFTP APPEND flag and writes at offset 0, trusting the server to put every
write at the end of the file (as OpenSSH's sftp-server does).

    asyncssh_append.py HOST PORT USER PASSWORD NAME PART1 PART2 PART3

NAME is relative (it lands in the session's start folder). PART1 is
written to NAME.part ('w'), PART2 appended in two writes ('a'), PART3
appended in a second 'a' session of the file; then NAME.part is renamed
to NAME. Prints "ok"; any error ends with a non-zero exit and the reason.
"""

import asyncio
import sys

import asyncssh


async def main(host, port, user, password, name, parts):
    data = [open(p, "rb").read() for p in parts]
    temp = name + ".part"
    async with asyncssh.connect(
        host,
        port=int(port),
        username=user,
        password=password,
        # A loopback test server with a fresh host key.
        known_hosts=None,
        client_keys=None,
        agent_path=None,
    ) as conn:
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(temp, "wb") as f:
                await f.write(data[0])
            async with sftp.open(temp, "ab") as f:
                half = len(data[1]) // 2
                await f.write(data[1][:half])
                await f.write(data[1][half:])
            async with sftp.open(temp, "ab") as f:
                await f.write(data[2])
            await sftp.rename(temp, name)
    print("ok")


if __name__ == "__main__":
    if len(sys.argv) != 9:
        sys.exit(__doc__)
    asyncio.run(main(*sys.argv[1:6], sys.argv[6:9]))
