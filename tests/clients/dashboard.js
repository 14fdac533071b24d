// Drives pgshift's dashboard in headless Chromium (playwright-core):
// waits until the page has refreshed from the admin endpoints a few
// times, reads what it shows, sorts the digest table, and writes a
// screenshot. Prints one JSON object; exits 1 on any console error,
// page error or failed request.
//
// node dashboard.js <dashboard URL> <screenshot.png>
"use strict";
const { chromium } = require("playwright-core");

const [url, screenshot] = process.argv.slice(2);
const executablePath = process.env.PGSHIFT_CHROMIUM || "/usr/bin/chromium";

(async () => {
  const problems = [];
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    // Root in a container has no user namespaces for the sandbox.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1100 } });
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    page.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });

    await page.goto(url, { waitUntil: "load" });
    await page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: 15000 });
    // Interval figures need two refreshes; a few more fill the charts.
    await page.waitForTimeout(2500);

    const text = (sel) => page.$eval(sel, (e) => e.textContent.trim());
    const table = (sel) => page.$$eval(`${sel} tbody tr`, (rows) =>
      rows.map((r) => [...r.children].map((c) => c.textContent.trim())));
    const shown = {
      version: await text("#version"),
      rollback: await text("#rollback"),
      sessions: await text("#sessions"),
      healthOld: await text("#health-old"),
      healthNew: await text("#health-new"),
      updated: await text("#updated"),
      split: await table("#split"),
      mirror: await table("#mirror"),
      mismatchRate: await text("#mismatch-rate"),
      compareTotals: await text("#compare-totals"),
      latency: await table("#latency"),
      digests: await table("#digests"),
      mismatchChartDrawn: await page.$$eval("#mismatch-chart > *", (p) => p.length),
      latencyChartDrawn: await page.$$eval("#latency-chart > *", (p) => p.length),
    };
    await page.screenshot({ path: screenshot, fullPage: true });
    // Sorting: by calls, most first.
    await page.click('#digests th[data-key="calls"]');
    shown.digestsByCalls = await table("#digests");
    console.log(JSON.stringify({ shown, problems }));
  } finally {
    await browser.close();
  }
  process.exit(problems.length ? 1 : 0);
})().catch((e) => {
  console.log(JSON.stringify({ fatal: String(e && e.stack || e) }));
  process.exit(2);
});
