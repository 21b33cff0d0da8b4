"""Drive the playground in headless Chromium (selenium + chromedriver): for the browser test and
the screenshot script. Debian's ``chromium`` and ``chromium-driver`` packages provide the two
programs; nothing is downloaded.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def programs() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def open_browser(width: int = 1400, height: int = 1100):
    """A headless Chromium under selenium, with a fresh profile (closed with ``quit()``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = programs()
    if found is None:
        raise RuntimeError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='samplekit-chromium-')}")
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(options=options, service=Service(executable_path=found[1]))


def run_playground(driver, url: str, *, prompt: str = "ROMEO:", compare: bool = True, max_tokens: int = 24,
                   seed: int = 7, api_key: str | None = None, timeout: float = 90.0) -> dict[str, Any]:
    """Open the page, generate (with two chains when ``compare``), click a token of the first
    column; what the page then shows: tokens per column, texts, the detail panel's stages."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    if api_key:
        box = driver.find_element(By.ID, "api-key")
        box.send_keys(api_key)
        driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", box)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    field = driver.find_element(By.ID, "prompt")
    field.clear()
    field.send_keys(prompt)
    for name, value in (("max-tokens", max_tokens), ("seed", seed)):
        box = driver.find_element(By.ID, name)
        box.clear()
        box.send_keys(str(value))
    if compare != driver.find_element(By.ID, "compare").is_selected():
        driver.find_element(By.ID, "compare").click()
    driver.find_element(By.ID, "generate").click()
    columns = ["col-a", "col-b"] if compare else ["col-a"]
    wait.until(lambda d: all(d.find_element(By.ID, c).get_attribute("data-done") == "1" for c in columns)
               or d.find_element(By.ID, "message").text.strip())
    message = driver.find_element(By.ID, "message").text.strip()
    out: dict[str, Any] = {"message": message, "columns": {}}
    for c in columns:
        column = driver.find_element(By.ID, c)
        tokens = column.find_elements(By.CSS_SELECTOR, ".output .tok")
        out["columns"][c] = {"tokens": len(tokens), "text": column.find_element(By.CSS_SELECTOR, ".output").text,
                             "chain": [li.find_element(By.CSS_SELECTOR, ".proc").text
                                       for li in column.find_elements(By.CSS_SELECTOR, "ol.chain li")],
                             "status": column.find_element(By.CSS_SELECTOR, ".status").text}
    first = driver.find_elements(By.CSS_SELECTOR, "#col-a .output .tok")
    if first:
        first[min(2, len(first) - 1)].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detail table.stages"))
        detail = driver.find_element(By.ID, "detail")
        out["detail"] = {"title": detail.find_element(By.TAG_NAME, "h3").text,
                         "stages": [th.text.split("\n")[0] for th in detail.find_elements(By.CSS_SELECTOR, "th")],
                         "chosen": len(detail.find_elements(By.CSS_SELECTOR, "td.chosen")),
                         "cells": len(detail.find_elements(By.CSS_SELECTOR, "td .t"))}
    out["console"] = [e for e in _console(driver) if e.get("level") == "SEVERE"]
    return out


def _console(driver) -> list[dict]:
    try:
        return driver.get_log("browser")
    except Exception:  # noqa: BLE001 - not every driver keeps the console
        return []
