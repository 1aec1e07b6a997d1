"""Cache DeepSeek-R1 calls made through the OpenAI SDK. Run: DEEPSEEK_API_KEY=... python examples/openai_deepseek.py

It calls DeepSeek's API (two upstream calls the first time, none once cached). Without a key,
`r1mw demo` runs a whole trading day against a simulated R1, and tests/test_docs.py runs this
file against `r1mw.testing.R1Peer`, a fake DeepSeek server.
"""

import asyncio
import os
import sys

from openai import AsyncOpenAI

import r1mw

QUESTION = [{"role": "user", "content": "AAPL closed at 189.50 with RSI(14) at 71. Overbought?"}]


async def main(client: AsyncOpenAI | None = None) -> list[str]:
    client = client or AsyncOpenAI(api_key=os.environ.get("DEEPSEEK_API_KEY"), base_url="https://api.deepseek.com")
    async with r1mw.Pipeline(r1mw.Settings.from_env()) as pipe:
        cached = r1mw.wrap(client, pipe)  # same shape as the client: use it as before
        answers = []
        for attempt in ("first call", "same again"):  # the first is a miss unless an earlier run stored it
            reply = await cached.chat.completions.create(model="deepseek-reasoner", messages=QUESTION)
            message = reply.choices[0].message
            print(f"{attempt}: {message.content[:60]!r} (reasoning: {len(message.reasoning_content or '')} chars)")
            answers.append(message.content)
        async for chunk in await cached.chat.completions.create(model="deepseek-reasoner", messages=QUESTION, stream=True):
            print(chunk.choices[0].delta.content or "", end="")  # a hit replays as ChatCompletionChunk objects
        print("\n", pipe.stats()["hits_by"])
        return answers


if __name__ == "__main__":
    if not os.environ.get("DEEPSEEK_API_KEY"):
        sys.exit("examples/openai_deepseek.py calls DeepSeek's API: set DEEPSEEK_API_KEY "
                 "(or run `r1mw demo`, which needs no key)")
    asyncio.run(main())
