"""Claim (docs/deploy.md, "Calls across NAT"): the server hands callers its STUN/TURN servers
(setting ice_servers) at GET /v1/ice-servers, behind the API token; bad entries are refused
at start-up."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from pydantic import ValidationError

from web.settings import ServerSettings
from wsutil import running_server

TURN = {"urls": ["turn:turn.avatar.example:3478"], "username": "avatar", "credential": "s3cret"}


def test_ice_servers_are_served_to_callers_behind_the_token() -> None:
    async def scenario() -> tuple[int, int, dict]:
        async with running_server(ice_servers=[TURN], token="tok") as server, aiohttp.ClientSession() as s:
            async with s.get(f"{server.http}/v1/ice-servers") as r:
                anonymous = r.status
            async with s.get(f"{server.http}/v1/ice-servers", headers={"Authorization": "Bearer tok"}) as r:
                return anonymous, r.status, await r.json()

    anonymous, status, body = asyncio.run(scenario())
    assert anonymous == 401 and status == 200
    assert body == {"iceServers": [TURN]}


def test_without_ice_servers_the_list_is_empty() -> None:
    async def scenario() -> dict:
        async with running_server() as server, aiohttp.ClientSession() as s, \
                s.get(f"{server.http}/v1/ice-servers") as r:
            return await r.json()

    assert asyncio.run(scenario()) == {"iceServers": []}


def test_an_ice_server_url_must_be_stun_or_turn() -> None:
    with pytest.raises(ValidationError, match="stun:, stuns:, turn: or turns:"):
        ServerSettings(ice_servers=[{"urls": ["http://turn.example"]}])
    assert ServerSettings.from_env({"AVATAR_ICE_SERVERS": '[{"urls": ["stun:stun.example:3478"]}]'}).ice_servers[0].urls
