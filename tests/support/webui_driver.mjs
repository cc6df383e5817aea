// Drives Open WebUI in Debian's headless Chromium with playwright-core (no browser download).
//
// One JSON command per stdin line, one JSON reply per stdout line ({"ok": ..., "error": ...}):
//   {"cmd": "open", "url": U}                      load U, dismiss the "What's New" dialog (shown
//                                                  once: on the first visit of a fresh Open WebUI)
//   {"cmd": "models"}                              the names in the model selector
//   {"cmd": "turn", "model": M, "think": T, "text": X, "fresh": bool}
//        (in a new chat with M when fresh) the think control ("Default", "On" or "Off") set to
//        T, X sent, and once the answer is complete what the page shows of it:
//        {"answer": text, "reasoning": bool, "error": text or ""}
//   {"cmd": "expand", "label": L}                  in the last answer, open the collapsible whose
//                                                  button reads L (a tool call's "View Result
//                                                  from NAME"); the answer's whole text after it
//   {"cmd": "screenshot", "path": P}
// Environment: OLLAMADS_PLAYWRIGHT_CORE (the package folder), OLLAMADS_CHROMIUM (the browser).
import { createRequire } from 'node:module';
import readline from 'node:readline';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.OLLAMADS_PLAYWRIGHT_CORE);
const ANSWER_TIMEOUT_MS = Number(process.env.OLLAMADS_ANSWER_TIMEOUT_MS || 180000);

const browser = await chromium.launch({
  executablePath: process.env.OLLAMADS_CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
let base = '';

async function dismissWhatsNew() {
  const okay = page.getByRole('button', { name: /Okay, Let's Go/ });
  try {
    await okay.waitFor({ state: 'visible', timeout: 8000 });
    await okay.click();
  } catch {
    // not shown
  }
}

async function models() {
  await page.goto(base + '/');
  await page.locator('button[aria-label^="Selected model"]').first().click();
  await page.locator('[role=option][data-value]').first().waitFor();
  const names = await page.locator('[role=option][data-value]')
    .evaluateAll((options) => options.map((o) => o.getAttribute('data-value')));
  await page.keyboard.press('Escape');
  return names;
}

async function setThink(state) {
  const control = page.getByRole('button', { name: 'think (Ollama)' });
  if (!(await control.isVisible())) {
    await page.locator('button[aria-label="Controls"]').click();
    await control.waitFor({ state: 'visible' });
  }
  // Default -> On -> Custom -> Off -> Default
  for (let i = 0; i < 4 && (await control.innerText()).trim() !== state; i++) {
    await control.click();
  }
  const now = (await control.innerText()).trim();
  if (now !== state) throw new Error(`think control shows ${now}, not ${state}`);
}

async function answer(index) {
  const item = page.locator('div[role=listitem]:has(.chat-assistant)').nth(index);
  // Open WebUI shows Regenerate under an answer once it is complete (or has failed).
  await item.locator('button[aria-label="Regenerate"]').waitFor({ state: 'visible', timeout: ANSWER_TIMEOUT_MS });
  const shown = item.locator('.chat-assistant').first();
  const reasoning = await shown.locator('button', { hasText: /^\s*(Thought for|Thinking)/ }).count();
  const texts = await shown.locator('.markdown-prose').allInnerTexts();
  const errors = await shown.locator('div.rounded-2xl.items-start').allInnerTexts();
  return { answer: texts.join('\n').trim(), reasoning: reasoning > 0, error: errors.join('\n').trim() };
}

async function turn({ model, think, text, fresh }) {
  if (fresh) {
    await page.goto(`${base}/?models=${encodeURIComponent(model)}`);
    await page.locator('#chat-input').waitFor();
  }
  await setThink(think);
  const before = await page.locator('div[role=listitem]:has(.chat-assistant)').count();
  await page.locator('#chat-input').click();
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
  return answer(before);
}

async function expand({ label }) {
  const item = page.locator('div[role=listitem]:has(.chat-assistant)').last();
  const button = item.getByText(label, { exact: false }).first();
  await button.waitFor({ state: 'visible', timeout: 30000 });
  await button.click();
  await page.waitForTimeout(500);
  return (await item.innerText()).trim();
}

const commands = {
  open: async ({ url }) => { base = url.replace(/\/$/, ''); await page.goto(base + '/'); await dismissWhatsNew(); return base; },
  models,
  turn,
  expand,
  screenshot: async ({ path }) => { await page.screenshot({ path, fullPage: true }); return path; },
};

for await (const line of readline.createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const request = JSON.parse(line);
  if (request.cmd === 'close') break;
  try {
    const ok = await commands[request.cmd](request);
    process.stdout.write(JSON.stringify({ ok }) + '\n');
  } catch (error) {
    process.stdout.write(JSON.stringify({ error: String(error && error.stack || error) }) + '\n');
  }
}
await browser.close();
