"""Shared helpers for tests on the local OpenAI-protocol server (guardsmith.standins.chat_server)."""
from __future__ import annotations


def counting_connections(srv) -> list[int]:
    """Count the TCP connections the local server accepts: a one-item list, updated in place."""
    accepted = [0]
    original = srv._httpd.process_request

    def process_request(request, address):
        accepted[0] += 1
        return original(request, address)

    srv._httpd.process_request = process_request
    return accepted
