"""The real-peer fixtures every SIP test uses, registered for the whole suite by tests/conftest.py.

Each fixture is a factory of runners that are started later, in the test's order; every runner made is
stopped at teardown. A missing peer binary fails the test (`./dev test` installs them all): `need()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import PeerMissing, require_binary
from tests.peers.baresip import Baresip
from tests.peers.kamailio import Kamailio
from tests.peers.linphone import Linphonec
from tests.peers.sipp import Sipp


def need(*binaries: str) -> None:
    for name in binaries:
        try:
            require_binary(name)
        except PeerMissing as exc:
            pytest.fail(str(exc))


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Callable[..., Sipp]]:
    """`sipp("uac_speech", remote=..., ...)`: SIPp runners (tests/peers/sipp.py), killed at teardown."""
    need("sipp")
    made: list[Sipp] = []

    def make(scenario: str, **kwargs: Any) -> Sipp:
        runner = Sipp(scenario, workdir=tmp_path, **kwargs)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Callable[[tuple[str, int]], Kamailio]]:
    """`kamailio(target)`: a Record-Route proxy in front of `target`, stopped at teardown."""
    need("kamailio")
    made: list[Kamailio] = []

    def make(target: tuple[str, int]) -> Kamailio:
        proxy = Kamailio(workdir=tmp_path, target=target)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture
async def baresip(tmp_path: Path) -> AsyncIterator[Callable[..., Baresip]]:
    """`baresip(source_pcm=...)`: baresip phones driven over ctrl_tcp, closed at teardown."""
    need("baresip")
    made: list[Baresip] = []

    def make(**kwargs: Any) -> Baresip:
        phone = Baresip(workdir=tmp_path, **kwargs)
        made.append(phone)
        return phone

    yield make
    for phone in made:
        await phone.close()


@pytest.fixture
async def linphonec(tmp_path: Path) -> AsyncIterator[Callable[..., Linphonec]]:
    """`linphonec(play_pcm=...)`: linphone console clients, closed at teardown."""
    need("linphonec")
    made: list[Linphonec] = []

    def make(**kwargs: Any) -> Linphonec:
        phone = Linphonec(workdir=tmp_path, **kwargs)
        made.append(phone)
        return phone

    yield make
    for phone in made:
        await phone.close()
