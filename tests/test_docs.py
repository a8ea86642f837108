"""README.md as a front page and docs/ as the reference: short, every link and picture resolves, every make target
named, and CI running the README's test command."""

import os
import re
import subprocess

from helpers import REPO

PAGES = ["README.md"] + [os.path.join("docs", name) for name in sorted(os.listdir(os.path.join(REPO, "docs")))
                         if name.endswith(".md")]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return f.read()


def anchors(text):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in text.splitlines() if line.startswith("#")}


def test_readme_is_a_front_page_with_the_two_commands():
    readme = read("README.md")
    assert len(readme.splitlines()) <= 120
    commands = re.search(r"## Two commands\n\n```bash\n(.*?)```", readme, re.S).group(1).splitlines()
    assert [line.split("#")[0].strip() for line in commands] == ["make demo", "make test"]
    ci = [line for line in read(".ci/run").splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["make test"]  # CI runs the README's test command, nothing else


def test_every_link_and_picture_resolves():
    expected = {"pipeline.md", "accuracy.md", "performance.md", "reproduce.md", "weights.md", "data.md"}
    assert expected <= {os.path.basename(page) for page in PAGES}
    for page in PAGES:
        text = read(page)
        assert text.startswith("# ") and "\n\n" in text, page  # a title, then what the reader comes for
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            assert os.path.exists(os.path.join(REPO, resolved)), f"{page}: {target}"
            if anchor:
                assert anchor in anchors(read(resolved)), f"{page}: {target}"
    picture = re.search(r"!\[[^\]]*\]\(([^)]+)\)", read("README.md")).group(1)
    with open(os.path.join(REPO, picture), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(os.path.join(REPO, picture)) < 1_000_000


def test_every_make_target_is_in_make_help_and_the_readme():
    makefile = read("Makefile")
    phony = re.search(r"^\.PHONY: (.*)$", makefile, re.M).group(1).split()
    listed = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout
    helped = [line.split()[1] for line in listed.splitlines()]
    assert sorted(helped) == sorted(phony)
    readme = read("README.md")
    missing = [target for target in phony if f"make {target}" not in readme]
    assert not missing, f"make targets the README does not name: {missing}"
