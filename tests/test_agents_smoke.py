from tests.conftest import Tenant


async def test_create_and_get_agent(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    assert agent["status"] == "draft"
    got = await tenant.get(f"/agents/{agent['id']}")
    assert got.status_code == 200
    assert got.json()["data"]["name"] == "Acme Support"
