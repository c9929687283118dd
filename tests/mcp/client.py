"""Drives actiond's /mcp with the Python `mcp` SDK's own client, as an agent
platform would: initialize, list the tools, run an action's tool, answer the
message in the dev sandbox, wait for the reply with get_execution, and get an
error back as a tool result. Exits non-zero on any difference.

    python client.py BASE_URL TOKEN
"""

import asyncio
import json
import sys
import urllib.request

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


def sandbox_reply(base, token, execution_id):
    request = urllib.request.Request(
        f"{base}/_sandbox/reply",
        data=json.dumps({"execution_id": execution_id, "button": "Yes"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def create_action(base, token):
    body = {
        "name": "Call permission",
        "description": "Ask the caller on WhatsApp for permission to call back",
        "type": "SEND_WHATSAPP",
        "action_timing": "during",
        "webhook": {"to": "12817126508", "from": "650175178190170", "template_name": "call_permission_request",
                    "body_params": ["{{customer_name}}"], "mandatory": True},
    }
    request = urllib.request.Request(
        f"{base}/v2/_actions", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)["data"]["action_id"]


async def main(base, token):
    action_id = create_action(base, token)
    async with streamablehttp_client(f"{base}/mcp", headers={"Authorization": f"Bearer {token}"}) as (read, write, _):
        async with ClientSession(read, write) as session:
            initialized = await session.initialize()
            check(initialized.serverInfo.name == "actiond", f"initialized, protocol {initialized.protocolVersion}")
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            check("call_permission" in tools and "get_execution" in tools and "list_actions" in tools, f"tools: {sorted(tools)}")
            check(tools["call_permission"].inputSchema["required"] == ["customer_name"], "the action's variables are its input schema")

            ran = await session.call_tool("call_permission", {"customer_name": "Ana", "call_id": "call-mcp-py"})
            check(not ran.isError, f"the action ran: {ran.content[0].text}")
            execution = ran.structuredContent
            check(execution["action_id"] == action_id and execution["status"] == "queued", "structuredContent is the execution")
            again = await session.call_tool("call_permission", {"customer_name": "Ana", "call_id": "call-mcp-py"})
            check(again.structuredContent["execution_id"] == execution["execution_id"], "the same call id runs the action once")

            for _ in range(100):
                status = (await session.call_tool("get_execution", {"execution_id": execution["execution_id"]})).structuredContent["status"]
                if status == "read":
                    break
                await asyncio.sleep(0.1)
            sandbox_reply(base, token, execution["execution_id"])
            replied = await session.call_tool("get_execution", {"execution_id": execution["execution_id"], "wait_seconds": 10})
            check(replied.structuredContent["status"] == "replied", f"get_execution waited for the reply: {replied.content[0].text}")

            failed = await session.call_tool("call_permission", {"call_id": "call-mcp-py-2"})
            check(failed.isError and failed.content[0].text.startswith("missing_variable:"), f"an error is a tool result: {failed.content[0].text}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
