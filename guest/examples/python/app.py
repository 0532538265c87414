"""The seed's server in Python, written as Python authors write servers:
asyncio streams under a stock `asyncio.run()`.

It listens on LISTEN_ADDR (the address the host grants it), answers every
read of up to 2048 bytes with `python socket server : N` (N random in
0..100, one reply per line), serves many clients at once, and logs each
connect, payload and disconnect.

Build: see the guide (docs/guests.md, "Guests in other languages"): componentize-py,
WASI 0.2.
"""

import asyncio
import os
import random

from wit_world import exports


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    print(f"{peer}: connected", flush=True)
    try:
        while data := await reader.read(2048):
            print(f"{peer}: {data!r}", flush=True)
            writer.write(f"python socket server : {random.randrange(100)}\n".encode())
            await writer.drain()
    except ConnectionError as e:
        print(f"{peer}: {e}", flush=True)
    finally:
        print(f"{peer}: disconnected", flush=True)
        writer.close()


async def main() -> None:
    host, port = os.environ["LISTEN_ADDR"].rsplit(":", 1)
    server = await asyncio.start_server(serve, host.strip("[]"), int(port))
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


class Run(exports.Run):
    """The command's entry point (`wasi:cli/run`)."""

    def run(self) -> None:
        asyncio.run(main())
