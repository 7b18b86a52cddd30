"""Logs in to the status page in headless Chromium, takes a screenshot of
the dashboard and prints its feeds' badges and health lines as JSON.

usage: dashboard_shot.py BASE_URL NAME PASSWORD SCREENSHOT.png
"""
import json
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from chromium import headless_chromium, log_in


def main():
    base, name, password, shot = sys.argv[1:5]
    driver = headless_chromium()
    try:
        log_in(driver, base, name, password)
        WebDriverWait(driver, 20).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".feeds section")
        )
        driver.save_screenshot(shot)
        feeds = {}
        for card in driver.find_elements(By.CSS_SELECTOR, ".feeds section"):
            title = card.find_element(By.TAG_NAME, "h2").text
            badge = card.find_element(By.CSS_SELECTOR, ".badge")
            feeds[title.split()[0]] = {
                "badge": badge.text,
                "badge_colour": badge.value_of_css_property("background-color"),
                "border": card.value_of_css_property("border-left-color"),
                "health": card.find_element(By.CSS_SELECTOR, "p.health").text,
                "text": card.text,
                "has_trend": bool(card.find_elements(By.CSS_SELECTOR, ".trend svg")),
            }
        print(json.dumps(feeds))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
