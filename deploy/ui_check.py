"""Loads the OpenClaw Control UI in headless Chromium (Selenium + chromedriver) and waits
for what a person would see: `connected` (the UI's Model Setup page, its first-run screen
with no model configured) or `refused` (the UI's page for the gateway's token-mismatch refusal: "… rejected the
supplied Gateway secret").

usage: ui_check.py URL connected|refused [timeout_s]
Prints the page's text on failure; exits 0 when the expected state is reached.
"""
import os
import sys
import time

os.environ.setdefault("SE_AVOID_STATS", "true")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

url, want = sys.argv[1], sys.argv[2]
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60
opts = webdriver.ChromeOptions()
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
          "--disable-background-networking", "--disable-component-update"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")),
                          options=opts)
try:
    driver.set_page_load_timeout(timeout)
    driver.get(url)
    end = time.time() + timeout
    text = ""
    while time.time() < end:
        text = driver.execute_script("return document.body ? document.body.innerText : ''") or ""
        low = text.lower()
        if want == "connected" and "model setup" in low:
            print(f"connected: {driver.current_url.split('#')[0]}")
            sys.exit(0)
        # The UI's rendering of the gateway's AUTH_TOKEN_MISMATCH refusal.
        marks = ("rejected the supplied gateway secret", "token mismatch")
        if want == "refused" and any(m in low for m in marks):
            line = next(l for l in text.splitlines() if any(m in l.lower() for m in marks))
            print(f"refused: {line.strip()[:200]}")
            sys.exit(0)
        time.sleep(0.5)
    print(f"not {want} within {timeout}s at {driver.current_url.split('#')[0]}; page text:\n{text[:1500]}")
    sys.exit(1)
finally:
    driver.quit()
