#!/usr/bin/env python3
"""Browser test of certrot's operator console: headless Chromium through Selenium 4.

  python3 Tests/console/console_test.py --base http://127.0.0.1:PORT --token TOKEN \
      --campaign CAMPAIGN_ID --device DEVICE_ID --screenshots DIR

The campaign must be running (its verified count growing) when the test starts; the test pauses it and leaves it
paused. Prints each check; exits 0 when all pass, else 1 at the first failure (message, DIR/failure.png).
Needs /usr/bin/chromium, /usr/bin/chromedriver and selenium (scripts/bootstrap installs them)."""
import argparse, json, os, sys, time, urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

SHORT, PROGRESS = 15, 60  # seconds: any wait / waiting for the campaign to progress


class CheckFailed(Exception):
    pass


class Console:
    def __init__(self, args):
        self.a, self.passed = args, 0
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.d.set_window_size(1280, 900)
        self.d.set_page_load_timeout(SHORT)

    # --- helpers ---------------------------------------------------------------------------------------------------
    def ok(self, what):
        self.passed += 1
        print(f"ok   {what}", flush=True)

    def wait(self, cond, what, timeout=SHORT, shows=()):
        """Waits until cond(driver) is truthy (stale elements count as not yet); fails with `what` on timeout, and
        with the text of the elements `shows` (CSS selectors) show then."""
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.25,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(cond)
        except TimeoutException:
            seen = ""
            for css in shows:
                els = self.d.find_elements(By.CSS_SELECTOR, css)
                seen += f"; {css} reads {els[0].text.strip()!r}" if els else f"; no {css}"
            raise CheckFailed(f"{what} (not within {timeout} s{seen}; page {self.d.current_url})") from None

    def one(self, css, what=None, timeout=SHORT):
        return self.wait(lambda d: (d.find_elements(By.CSS_SELECTOR, css) or [None])[0],
                         f"no element {css}" + (f" ({what})" if what else ""), timeout)

    def text(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css).text.strip()

    def api(self, path):
        with urllib.request.urlopen(self.a.base + path, timeout=SHORT) as r:
            return json.load(r)

    def open(self, path, main_id, **data):
        """GET path; expects <main id=main_id> with the given data-* attributes; then checks a11y and console."""
        self.d.get(self.a.base + path)
        main = self.one(f"main#{main_id}", f"GET {path} should show <main id=\"{main_id}\">")
        for k, v in data.items():
            got = main.get_attribute(f"data-{k}")
            if got != v:
                raise CheckFailed(f"GET {path}: <main id=\"{main_id}\"> has data-{k}={got!r}, want {v!r}")
        self.ok(f"GET {path} shows <main id=\"{main_id}\">" + "".join(f" data-{k}={v}" for k, v in data.items()))
        self.check_a11y(path)
        self.check_console(path)
        return main

    def screenshot(self, name):
        """Full-page shot, 1280 wide: viewport height = page height (capped at 4000), then back to 1280x900."""
        height, chrome = self.d.execute_script(
            "return [document.body.scrollHeight, window.outerHeight - window.innerHeight]")
        height = max(100, min(int(height), 4000))
        self.d.set_window_size(1280, height + int(chrome))  # headless Chromium's window: ~140 px over its viewport
        path = os.path.join(self.a.screenshots, name)
        self.d.save_screenshot(path)
        self.d.set_window_size(1280, 900)
        self.ok(f"screenshot {path} (1280x{height})")

    # --- cross-page checks -----------------------------------------------------------------------------------------
    def check_console(self, page, allow_401=False):
        """No SEVERE browser-log entry, except favicon.ico and (when allow_401) the deliberately refused request."""
        bad = [e["message"] for e in self.d.get_log("browser") if e["level"] == "SEVERE"
               and "favicon.ico" not in e["message"] and not (allow_401 and "401" in e["message"])]
        if bad:
            raise CheckFailed(f"{page}: console errors:\n  " + "\n  ".join(bad))
        self.ok(f"{page}: no console errors")

    A11Y_JS = """
      const p = [], d = e => '<' + e.tagName.toLowerCase() + (e.id ? ' id="' + e.id + '"' : '')
                             + (e.name ? ' name="' + e.name + '"' : '') + '>';
      if (!(document.documentElement.getAttribute('lang') || '').trim()) p.push('<html> has no lang');
      for (const e of document.querySelectorAll('input, select, textarea')) {
        if (e.tagName === 'INPUT' && (e.getAttribute('type') || '').toLowerCase() === 'hidden') continue;
        const byFor = e.id && document.querySelector('label[for="' + CSS.escape(e.id) + '"]');
        if (!byFor && !(e.getAttribute('aria-label') || '').trim()) p.push(d(e) + ' has no <label for> nor aria-label');
      }
      document.querySelectorAll('svg').forEach((s, i) => {
        const title = [...s.children].some(c => c.tagName.toLowerCase() === 'title' && c.textContent.trim());
        const img = s.getAttribute('role') === 'img' && (s.getAttribute('aria-label') || '').trim();
        if (!title && !img)
          p.push('svg #' + (i + 1) + (s.id ? ' (id="' + s.id + '")' : '')
                 + ' has no <title> nor role="img" with aria-label');
      });
      return p;"""

    def check_a11y(self, page):
        problems = self.d.execute_script(self.A11Y_JS)
        if problems:
            raise CheckFailed(f"{page}: accessibility:\n  " + "\n  ".join(problems))
        self.ok(f"{page}: lang set, every field labelled, every svg titled")

    # --- the checks ------------------------------------------------------------------------------------------------
    def check_fleet_and_risk(self):
        self.open("/", "fleet")
        self.screenshot("fleet.png")
        self.open("/risk", "risk")
        self.screenshot("risk.png")

    def waves(self):
        out = []
        for i, w in enumerate(self.d.find_elements(By.CSS_SELECTOR, ".wave"), 1):
            if w.get_attribute("id") != f"wave-{i}":
                raise CheckFailed(f"campaign page: .wave number {i} has id={w.get_attribute('id')!r}, want 'wave-{i}'")
            try:
                out.append({k: int(w.get_attribute(f"data-{k}")) for k in ("size", "verified", "sent", "failed")})
            except (TypeError, ValueError):
                raise CheckFailed(f"campaign page: wave-{i} lacks integer data-size/-verified/-sent/-failed") from None
        return out

    def check_campaign_live(self):
        cid = self.a.campaign
        self.open(f"/campaigns/{cid}", "campaign", campaign=cid)
        want = self.api(f"/api/v1/campaigns/{cid}").get("state")
        self.wait(lambda d: self.text("#campaign-state") == want,
                  f"#campaign-state should read {want!r} (the API's state)",
                  shows=("#campaign-state",))
        self.ok(f"#campaign-state reads {want!r}, as the API says")
        waves = self.wait(lambda d: self.waves(), "campaign page: no .wave element")
        before = sum(w["verified"] for w in waves)
        self.ok(f"{len(waves)} waves (wave-1..wave-{len(waves)}), verified total {before}")
        t0 = time.monotonic()
        self.wait(lambda d: sum(w["verified"] for w in self.waves()) > before,
                  f"campaign page: verified total stays {before}: the page does not update live, or the campaign does "
                  "not run", PROGRESS, shows=("#campaign-state",))
        after = sum(w["verified"] for w in self.waves())
        self.ok(f"verified total grew from {before} to {after} in {time.monotonic() - t0:.1f} s, without reload")
        self.screenshot("campaign.png")

    def check_actions(self):
        token = self.one("input#token", "token field")
        labelled = self.d.find_elements(By.CSS_SELECTOR, 'label[for="token"]')
        if token.get_attribute("type") != "password" or not labelled:
            raise CheckFailed('campaign page: #token must be <input type="password"> with <label for="token">')
        for b in ("pause", "resume", "abort"):
            self.one(f"button#{b}")
        if self.one("#action-status").get_attribute("role") != "status":
            raise CheckFailed('campaign page: #action-status needs role="status"')
        self.ok('#token (password, labelled), #pause, #resume, #abort, #action-status role="status" present')
        token.clear()
        self.one("#pause").click()
        self.wait(lambda d: "401" in self.text("#action-status"),
                  "pause without token: #action-status should mention 401",
                  shows=("#action-status",))
        time.sleep(2.5)  # one poll period: the state must not flip to paused afterwards either
        if self.text("#campaign-state") == "paused":
            raise CheckFailed("pause without token was refused (401) yet #campaign-state reads 'paused'")
        self.ok(f"pause without token refused: #action-status {self.text('#action-status')!r}, "
                f"state {self.text('#campaign-state')!r}")
        self.check_console("campaign page, refused pause", allow_401=True)
        token.send_keys(self.a.token)
        self.one("#pause").click()
        self.wait(lambda d: self.text("#campaign-state") == "paused",
                  "pause with token: #campaign-state should read 'paused'",
                  shows=("#campaign-state", "#action-status"))
        self.ok(f"pause with token: #campaign-state reads 'paused' (#action-status {self.text('#action-status')!r})")
        self.check_console("campaign page, pause", allow_401=True)  # a late log line of the refused one
        state = self.api(f"/api/v1/campaigns/{self.a.campaign}").get("state")
        if state != "paused":
            raise CheckFailed(f"GET /api/v1/campaigns/{self.a.campaign}: state {state!r}, want 'paused'")
        self.ok("the API says the campaign is paused")

    def search(self, text):
        q = self.one("form#device-search input#q", "device search field")
        q.clear()
        q.send_keys(text, Keys.ENTER)

    def check_device_search(self):
        dev, prefix = self.a.device, self.a.device[:5]
        self.d.get(self.a.base + "/devices")
        self.one("form#device-search", "GET /devices should have <form id=\"device-search\">")
        self.check_a11y("/devices")
        self.check_console("/devices")
        self.search(prefix)
        def listed(d):
            return any(a.text.strip() == dev for a in d.find_elements(By.CSS_SELECTOR, "#device-results a.device"))
        self.wait(listed, f"search {prefix!r}: #device-results should list a.device {dev!r}",
                  shows=("#device-results",))
        self.ok(f"search {prefix!r} lists a.device {dev!r} in #device-results")
        self.check_a11y("device search results")
        self.check_console("device search results")
        self.search(dev)
        self.one(f'main#device[data-device="{dev}"]', f"search {dev!r} should open the device page")
        self.ok(f"search {dev!r} opens <main id=\"device\" data-device=\"{dev}\">")
        self.check_a11y("device page")
        self.check_console("device page")

    def check_phone_width(self):
        self.d.set_window_size(390, 844)  # left so on failure: failure.png then shows the phone layout
        for path in ("/", f"/campaigns/{self.a.campaign}"):
            self.d.get(self.a.base + path)
            self.one("main")
            sw, iw = self.d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            if sw > iw + 1:
                raise CheckFailed(f"GET {path} at 390x844 scrolls sideways: scrollWidth {sw} > innerWidth {iw}")
            self.ok(f"GET {path} at 390x844: no horizontal scroll (scrollWidth {sw}, innerWidth {iw})")
            self.check_console(f"{path} at 390x844")
        self.d.set_window_size(1280, 900)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("base", "token", "campaign", "device", "screenshots"):
        p.add_argument(f"--{name}", required=True)
    args = p.parse_args()
    args.base = args.base.rstrip("/")
    os.makedirs(args.screenshots, exist_ok=True)
    t0, c = time.monotonic(), None
    try:
        try:  # fail fast when nothing answers there
            urllib.request.urlopen(args.base + "/", timeout=SHORT).close()
        except OSError as e:
            raise CheckFailed(f"GET {args.base}/ failed: {e}") from None
        c = Console(args)
        for check in (c.check_fleet_and_risk, c.check_campaign_live, c.check_actions, c.check_device_search,
                      c.check_phone_width):
            print(f"--   {check.__name__}", flush=True)
            check()
    except (CheckFailed, WebDriverException, OSError, ValueError) as e:
        print(f"FAIL {type(e).__name__ + ': ' if not isinstance(e, CheckFailed) else ''}{e}", flush=True)
        if c is not None:
            try:
                c.d.save_screenshot(os.path.join(args.screenshots, "failure.png"))
                print(f"     screenshot {os.path.join(args.screenshots, 'failure.png')}")
            except WebDriverException:
                pass
        print(f"console: {c.passed if c else 0} passed, 1 failed")
        return 1
    finally:
        if c is not None:
            c.d.quit()
    print(f"--   all checks passed in {time.monotonic() - t0:.1f} s")
    print(f"console: {c.passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
