"""Drives headless Chromium (chromedriver + selenium) through the status
page: log in, open a held run, look at who would be removed, confirm it;
then search the recipients (by name, then with a department filter), open
one, and look at the search page as a phone would.

usage: browser.py BASE_URL NAME PASSWORD RUN_ID SCREENSHOT_DIR ERRORS_RUN_ID
(ERRORS_RUN_ID: a run with an error report, downloaded through the page.)
Prints one JSON object with what it saw; screenshots go to SCREENSHOT_DIR.
"""
import json
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait


def main():
    base, name, password, run_id, shots, errors_run = sys.argv[1:7]
    os.makedirs(shots, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,800",
    ]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    seen = {}
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(base + "/login")
        driver.save_screenshot(os.path.join(shots, "01-login.png"))
        driver.find_element(By.NAME, "name").send_keys(name)
        driver.find_element(By.NAME, "password").send_keys(password)
        navigate(driver, driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button"))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".feeds")))
        driver.save_screenshot(os.path.join(shots, "02-dashboard.png"))
        seen["dashboard_text"] = driver.find_element(By.TAG_NAME, "main").text
        navigate(driver, driver.find_element(By.LINK_TEXT, f"run {run_id}"))
        wait.until(EC.presence_of_element_located((By.ID, "confirm")))
        driver.save_screenshot(os.path.join(shots, "03-held-run.png"))
        seen["held_title"] = driver.find_element(By.TAG_NAME, "h1").text
        rows = driver.find_elements(By.CSS_SELECTOR, "section.hold table.list tbody tr")
        seen["would_remove"] = [r.text for r in rows]
        navigate(driver, driver.find_element(By.ID, "confirm"))
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "applied"))
        driver.save_screenshot(os.path.join(shots, "04-confirmed.png"))
        seen["after_title"] = driver.find_element(By.TAG_NAME, "h1").text
        seen["after_text"] = driver.find_element(By.TAG_NAME, "main").text
        driver.get(base + "/runs")
        driver.save_screenshot(os.path.join(shots, "05-runs.png"))
        seen["runs_text"] = driver.find_element(By.TAG_NAME, "main").text
        driver.get(base + "/groups?feed=hr")
        driver.save_screenshot(os.path.join(shots, "06-groups.png"))
        seen["groups_text"] = driver.find_element(By.TAG_NAME, "main").text
        links = driver.find_elements(By.CSS_SELECTOR, "table.list a")
        if links:
            navigate(driver, links[0])
            wait.until(EC.presence_of_element_located((By.TAG_NAME, "h2")))
            driver.save_screenshot(os.path.join(shots, "07-group-members.png"))
            seen["members_text"] = driver.find_element(By.TAG_NAME, "main").text
        driver.get(base + "/accounts")
        driver.save_screenshot(os.path.join(shots, "08-accounts.png"))
        seen["accounts_text"] = driver.find_element(By.TAG_NAME, "main").text
        seen.update(download_error_report(driver, base, shots, errors_run))
        seen.update(search_recipients(driver, wait, base, shots))
    finally:
        driver.quit()
    print(json.dumps(seen))


def download_error_report(driver, base, shots, run_id):
    """Opens a run with errors and clicks its error report's link."""
    downloads = os.path.join(shots, "downloads")
    os.makedirs(downloads, exist_ok=True)
    for name in os.listdir(downloads):
        os.remove(os.path.join(downloads, name))
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads}
    )
    driver.get(f"{base}/runs/{run_id}")
    driver.save_screenshot(os.path.join(shots, "13-run-with-errors.png"))
    seen = {"errors_run_text": driver.find_element(By.TAG_NAME, "main").text}
    driver.find_element(By.LINK_TEXT, "download").click()
    deadline = time.time() + 20
    done = []
    while not done and time.time() < deadline:
        time.sleep(0.2)
        done = [n for n in os.listdir(downloads) if not n.endswith(".crdownload")]
    seen["downloaded_name"] = done[0] if done else None
    if done:
        with open(os.path.join(downloads, done[0]), encoding="utf-8") as f:
            seen["downloaded"] = f.read()
    return seen


def navigate(driver, element):
    """Clicks what loads a new page and waits until the old one is gone:
    the form's own page has a results table too, and rows read while the
    next page loads come from a page that is going away."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 20).until(lambda _: gone(old))


def gone(element):
    """Whether the element's page has been replaced. Chromium reports a
    node of a replaced page as stale, or as one that "does not belong to
    the document", depending on when it is asked."""
    try:
        element.is_enabled()
        return False
    except WebDriverException:
        return True


def search(driver, base, query, field="", value=""):
    """Fills in and submits the search form; returns the result rows."""
    driver.get(base + "/recipients?feed=hr")
    box = driver.find_element(By.NAME, "q")
    box.clear()
    box.send_keys(query)
    Select(driver.find_element(By.NAME, "field")).select_by_value(field)
    driver.find_element(By.NAME, "value").send_keys(value)
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "form.search button"))
    WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.ID, "recipients")))
    return [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#recipients tbody tr")]


def search_recipients(driver, wait, base, shots):
    seen = {}
    # The index follows the confirmed run within a second or two.
    deadline = time.time() + 20
    rows = search(driver, base, "last1")
    while len(rows) != 4 and time.time() < deadline:
        time.sleep(0.5)
        rows = search(driver, base, "last1")
    driver.save_screenshot(os.path.join(shots, "09-search.png"))
    seen["search_rows"] = rows
    seen["search_count"] = driver.find_element(By.CSS_SELECTOR, "p.count").text
    seen["filtered_rows"] = search(driver, base, "last1", "department", "SALES")
    driver.save_screenshot(os.path.join(shots, "10-search-filtered.png"))
    navigate(driver, driver.find_element(By.CSS_SELECTOR, "#recipients tbody tr a"))
    wait.until(EC.presence_of_element_located((By.TAG_NAME, "dl")))
    driver.save_screenshot(os.path.join(shots, "11-recipient.png"))
    seen["recipient_text"] = driver.find_element(By.TAG_NAME, "main").text
    driver.set_window_size(390, 844)
    search(driver, base, "first")
    driver.save_screenshot(os.path.join(shots, "12-search-phone.png"))
    seen["phone_width"] = driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1"
    )
    return seen


if __name__ == "__main__":
    main()
