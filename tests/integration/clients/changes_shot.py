"""Logs in to the status page in headless Chromium, opens pages, saves a
screenshot of each and prints what each shows as JSON: the rows of its
change list (cells joined by tabs), its history section, its text, and
whether it fits the window's width.

usage: changes_shot.py BASE_URL NAME PASSWORD SHOT_DIR NAME=PATH[@phone][!click=ID]...
(@phone: a 390 px wide window instead of 1100 px; !click=ID: click the
element with that id, e.g. a form's button, and show the page it leads to)
"""
import json
import os
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from chromium import headless_chromium, log_in


def main():
    base, name, password, shot_dir = sys.argv[1:5]
    pages = [arg.split("=", 1) for arg in sys.argv[5:]]
    os.makedirs(shot_dir, exist_ok=True)
    driver = headless_chromium()
    seen = {}
    try:
        log_in(driver, base, name, password)
        for shot, path in pages:
            path, _, click = path.partition("!click=")
            phone = path.endswith("@phone")
            path = path.removesuffix("@phone")
            driver.set_window_size(390 if phone else 1100, 844 if phone else 1400)
            driver.get(base + path)
            WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.TAG_NAME, "h1"))
            if click:
                before = driver.current_url
                driver.find_element(By.ID, click).click()
                WebDriverWait(driver, 20).until(
                    lambda d: d.current_url != before and d.find_elements(By.TAG_NAME, "h1")
                )
            driver.save_screenshot(os.path.join(shot_dir, shot + ".png"))
            rows = [
                "\t".join(td.text for td in tr.find_elements(By.TAG_NAME, "td"))
                for tr in driver.find_elements(By.CSS_SELECTOR, "table.changes tbody tr")
            ]
            history = driver.find_elements(By.ID, "history")
            seen[shot] = {
                "url": driver.current_url,
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


if __name__ == "__main__":
    main()
