"""Client certificates held in memory, loaded into an SSL context without the key touching a
disk: for the controller's clients of edge API servers and for the agent's of its own."""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile


def load_client_certificate(context: ssl.SSLContext, certificate: bytes, key: bytes) -> None:
    """Load a client certificate and key held in memory. `load_cert_chain` reads only from a
    path: it is given an anonymous in-memory file (memfd, by its /proc path), so the key never
    reaches a disk. Where there is none, a file in a private directory removed as soon as it
    is read. The key is never encrypted in a kubeconfig; the empty password keeps OpenSSL from
    prompting on a terminal if one is."""
    both = certificate + b"\n" + key
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        try:
            descriptor = os.memfd_create("kubeconfig-client-credentials", os.MFD_CLOEXEC)
        except OSError:  # refused by a sandbox: the fallback below
            pass
        else:
            try:
                with open(descriptor, "wb", closefd=False) as memory:
                    memory.write(both)
                context.load_cert_chain(f"/proc/self/fd/{descriptor}", password=b"")
            finally:
                os.close(descriptor)
            return
    directory = tempfile.mkdtemp(prefix="edge-tls-")  # mode 0700
    try:
        path = os.path.join(directory, "credentials.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(both)
        context.load_cert_chain(path, password=b"")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
