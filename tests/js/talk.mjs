// The in-browser voice tester in Debian's Chromium, driven by playwright-core (run by tests/peers/talk_browser.py
// inside a network namespace that has only `lo`). The fake microphone plays a WAV of a spoken question once.
//
//   node talk.mjs <page url> <question.wav> <screenshot.png> [wait seconds]
//
// Prints one JSON object: what the page saw (state, events from the agent's data channel, the agent's audio
// peak and when it was first loud, the time from Start to `ready`), or {"error": ...}.
import { chromium } from "playwright-core";

const [pageUrl, wav, screenshot, waitArg] = process.argv.slice(2);
const waitMs = 1000 * Number(waitArg || 90);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}%noloop`,
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
let result;
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 720 } });
  const console_ = [];
  page.on("console", (message) => console_.push(`${message.type()}: ${message.text()}`));
  await page.goto(pageUrl);
  await page.click("#start");
  // Mid-call: the agent has answered and its voice is arriving (or the page shows an error). Screenshot then.
  // (The greeting is the first stretch of the agent's voice, the answer the next.)
  await page.waitForFunction(
    () => window.talk.state === "error" || (window.talk.events.some((e) => e.type === "agent_message")
      && window.talk.speakingStarts.length >= 2 && window.talk.state === "speaking"),
    null, { timeout: waitMs, polling: 100 },
  ).catch(() => {});
  await page.screenshot({ path: screenshot });
  const seen = await page.evaluate(() => window.talk);
  await page.click("#hangup", { timeout: 1000 }).catch(() => {});  // disabled once the call has ended or failed
  await page.waitForTimeout(500);
  result = { ...seen, console: console_.slice(-20) };
} catch (error) {
  result = { error: String(error) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
