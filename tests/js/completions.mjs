// Drives Flowyte's OpenAI-compatible endpoint with the official `openai` npm package, unchanged but for
// the base URL: a plain completion, a streamed one, and an error. Prints one JSON object for the test.
//
//   node tests/js/completions.mjs <baseURL> <apiKey> <agentId>
import OpenAI from "openai";

const [baseURL, apiKey, agentId] = process.argv.slice(2);
if (!baseURL || !apiKey || !agentId) {
  console.error("usage: node completions.mjs <baseURL> <apiKey> <agentId>");
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const messages = [{ role: "user", content: "What are your hours?" }];

const completion = await client.chat.completions.create({ model: agentId, messages });

const stream = await client.chat.completions.create({ model: agentId, messages, stream: true });
let streamed = "";
const finishReasons = [];
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
  finishReasons.push(chunk.choices[0]?.finish_reason ?? null);
}

let error = null;
try {
  await client.chat.completions.create({ model: "gpt-4o", messages });
} catch (caught) {
  error = { status: caught.status, name: caught.constructor.name };
}

console.log(JSON.stringify({
  plain: completion.choices[0].message.content,
  object: completion.object,
  model: completion.model,
  streamed,
  finishReason: finishReasons.at(-1),
  error,
}));
