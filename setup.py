from setuptools import find_packages
from setuptools import setup

with open("README.rst", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="Flask-Pusher",
    version="4.0.0.dev0",
    description="Pusher Channels for Flask: client, channel authorization, "
    "user authentication, webhooks, and a local Pusher-compatible server.",
    long_description=long_description,
    long_description_content_type="text/x-rst",
    license="MIT",
    packages=find_packages(include=["flask_pusher", "flask_pusher.*"]),
    package_data={"flask_pusher": ["py.typed"]},
    include_package_data=True,
    zip_safe=False,
    python_requires=">=3.10",
    install_requires=[
        "flask>=3.0",
        "pusher>=3.3",
    ],
    extras_require={
        "server": [
            "aiohttp>=3.9",
        ],
        "test": [
            "pytest>=8",
            # tests/deploy makes a throwaway TLS certificate (pusher already needs it).
            "cryptography>=42",
            "asgiref>=3.2",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "responses>=0.25",
            "flask-wtf>=1.2",
            "pysher==1.0.8",
            "aiohttp>=3.9",
        ],
        # The browser test (tests/browser) drives Debian's chromium with Playwright;
        # it never downloads a browser ("playwright install" is not needed).
        "browser": [
            "playwright>=1.40",
        ],
        "docs": [
            "sphinx>=7",
            "pallets-sphinx-themes>=2.1",
        ],
    },
    entry_points={
        "flask.commands": ["pusher = flask_pusher.cli:pusher_cli"],
        "pytest11": ["flask_pusher = flask_pusher.testing"],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Flask",
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP :: Dynamic Content",
        "Typing :: Typed",
    ],
)
