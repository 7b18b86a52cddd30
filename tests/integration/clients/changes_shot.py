"""Logs in to the status page in headless Chromium, opens pages, saves a
screenshot of each and prints what each shows as JSON: the rows of its
change list (cells joined by tabs), its history section, its text, and
whether it fits the window's width.

usage: changes_shot.py BASE_URL NAME PASSWORD SHOT_DIR NAME=PATH[@phone]...
(@phone: a 390 px wide window instead of 1100 px)
"""
import json
import os
import sys

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main():
    base, name, password, shot_dir = sys.argv[1:5]
    pages = [arg.split("=", 1) for arg in sys.argv[5:]]
    os.makedirs(shot_dir, exist_ok=True)
    options = webdriver.ChromeOptions()
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,1400",
    ]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    seen = {}
    try:
        driver.get(base + "/login")
        driver.find_element(By.NAME, "name").send_keys(name)
        driver.find_element(By.NAME, "password").send_keys(password)
        old = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        WebDriverWait(driver, 20).until(lambda _: gone(old))
        for shot, path in pages:
            phone = path.endswith("@phone")
            path = path.removesuffix("@phone")
            driver.set_window_size(390 if phone else 1100, 844 if phone else 1400)
            driver.get(base + path)
            WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.TAG_NAME, "h1"))
            driver.save_screenshot(os.path.join(shot_dir, shot + ".png"))
            rows = [
                "\t".join(td.text for td in tr.find_elements(By.TAG_NAME, "td"))
                for tr in driver.find_elements(By.CSS_SELECTOR, "table.changes tbody tr")
            ]
            history = driver.find_elements(By.ID, "history")
            seen[shot] = {
                "title": driver.find_element(By.TAG_NAME, "h1").text,
                "rows": rows,
                "section": history[0].text if history else "",
                "text": driver.find_element(By.TAG_NAME, "body").text,
                "fits": driver.execute_script(
                    "return document.documentElement.scrollWidth <= window.innerWidth"
                ),
            }
        print(json.dumps(seen))
    finally:
        driver.quit()


def gone(element):
    try:
        element.is_enabled()
        return False
    except WebDriverException:
        return True


if __name__ == "__main__":
    main()
