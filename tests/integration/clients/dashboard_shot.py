"""Logs in to the status page in headless Chromium, takes a screenshot of
the dashboard and prints its feeds' badges and health lines as JSON.

usage: dashboard_shot.py BASE_URL NAME PASSWORD SCREENSHOT.png
"""
import json
import sys

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main():
    base, name, password, shot = sys.argv[1:5]
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
    try:
        driver.get(base + "/login")
        driver.find_element(By.NAME, "name").send_keys(name)
        driver.find_element(By.NAME, "password").send_keys(password)
        old = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        WebDriverWait(driver, 20).until(lambda _: gone(old))
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


def gone(element):
    try:
        element.is_enabled()
        return False
    except WebDriverException:
        return True


if __name__ == "__main__":
    main()
