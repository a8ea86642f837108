"""Step 1: download the Open-i chest X-rays and their MeSH terms into OUT/images/ and OUT/datas.json.

    python scraper.py OUT [--collection cxr] [--query Q] [--limit N] [--delay 1.0] [--workers 4] [--base-url URL]
    python scraper.py OUT --from-archive NLMCXR_png.tgz --reports NLMCXR_reports.tgz

Stopped or killed, the same command resumes: finished images are kept and not downloaded again.
The images are CC BY-NC-ND 4.0 (Indiana University / National Library of Medicine): credit them, no commercial use.
"""

import argparse

from models.cli import at_least
from models.errors import UserError, counted, run_cli
from models.fileio import check_output_folder
from scraper import archive, openi


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python scraper.py",
        description="Download chest X-rays (512 px PNGs) and their report MeSH terms from the Open-i API "
                    "(or from the official NLMCXR archives) into OUT/images/<image id>.png and OUT/datas.json. "
                    "Run the same command again to resume.")
    parser.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    api = parser.add_argument_group("Open-i API download")
    api.add_argument("--collection", default="cxr",
                     help="Open-i collection, the API's 'coll' (default cxr: the Indiana chest X-rays)")
    api.add_argument("--query", default="", help="free-text search query (default: empty, the whole collection)")
    api.add_argument("--limit", type=at_least(int, 1), help="stop after the first N search results (default: all)")
    api.add_argument("--delay", type=at_least(float, 0), default=1.0,
                     help="seconds to wait between API page requests (default 1.0)")
    api.add_argument("--workers", type=at_least(int, 1), default=4,
                     help="parallel image downloads (default 4; keep it small to be polite)")
    api.add_argument("--base-url", default=openi.DEFAULT_BASE_URL,
                     help=f"Open-i server; images must be on the same host (default {openi.DEFAULT_BASE_URL})")
    api.add_argument("--retries", type=at_least(int, 0), default=5,
                     help="retries per request on connection errors, timeouts, HTTP 429/5xx, broken bodies and "
                          "answers over --deadline (default 5)")
    api.add_argument("--backoff", type=at_least(float, 0), default=1.0,
                     help="retry backoff factor in seconds: waits factor*2^n between tries; a server's "
                          "Retry-After is obeyed (up to 120 s) (default 1.0)")
    api.add_argument("--timeout", type=at_least(float, 0.01), default=30.0,
                     help="seconds to wait for the server to connect or for its next bytes, per read; a server "
                          "that trickles is stopped by --deadline instead (default 30)")
    api.add_argument("--deadline", type=at_least(float, 0.01), default=120.0,
                     help="seconds one answer (an API page or an image) may take in all, from the request to "
                          "the body's last byte; a slower one is abandoned and retried like a timeout "
                          "(--retries), then the run stops (API page: run again to resume) or the image is "
                          "reported as not saved (default 120)")
    api.add_argument("--max-api-mb", type=at_least(float, 0.001), default=8.0,
                     help="refuse an API answer bigger than this many MiB: reading stops at the cap and the run "
                          "stops with an error, without retrying (default 8; Open-i's pages of 100 results "
                          "are ~0.1-0.3)")
    parser.add_argument("--max-image-mb", type=at_least(float, 0.001), default=10.0,
                        help="refuse images bigger than this many MiB (default 10; Open-i's are ~0.1-0.3)")
    offline = parser.add_argument_group("offline route (official bulk archives)")
    offline.add_argument("--from-archive", metavar="NLMCXR_png.tgz",
                         help="build OUT from the image archive (files named <image id>.png) instead of the API")
    offline.add_argument("--reports", metavar="NLMCXR_reports.tgz",
                         help="the report XML archive that goes with --from-archive")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    check_output_folder(args.out, "OUT")
    max_bytes = int(args.max_image_mb * 2**20)
    progress = not args.quiet
    if bool(args.from_archive) != bool(args.reports):
        raise UserError("--from-archive NLMCXR_png.tgz and --reports NLMCXR_reports.tgz go together; give both")
    if args.from_archive:
        result = archive.build_from_archives(args.out, args.from_archive, args.reports, max_bytes, progress)
        print(f"saved {counted(result['images'], 'image')} with their reports in {args.out} "
              f"({result['missing']} report images not in the image archive, "
              f"{result['not_in_reports']} archive images without a report)")
        for reason in result["bad_reports"][:5]:
            print(f"warning: unreadable report {reason}")
    else:
        scraper = openi.Scraper(args.out, base_url=args.base_url, collection=args.collection, query=args.query,
                                limit=args.limit, delay=args.delay, workers=args.workers, retries=args.retries,
                                backoff=args.backoff, timeout=args.timeout, deadline=args.deadline,
                                max_image_bytes=max_bytes, max_api_bytes=int(args.max_api_mb * 2**20),
                                progress=progress)
        try:
            result = scraper.run()
        except openi.ScrapeStopped as err:
            raise UserError(f"{err}; {openi.saved_summary(args.out)}; run the same command again to resume") from None
        print(f"saved {counted(result['entries'], 'result')} and {counted(result['images'], 'image')} in {args.out}")
        for reason in result["skipped"][:5]:
            print(f"warning: skipped a search result: {reason}")
        if len(result["skipped"]) > 5:
            print(f"warning: ... {len(result['skipped']) - 5} more skipped results "
                  f"(listed in {args.out}/.scraper-state.json)")
    if result["failed"]:
        first = "; ".join(list(result["failed"].values())[:3])
        raise UserError(f"{counted(len(result['failed']), 'image')} could not be saved ({first}); the rest is saved in "
                        f"{args.out}; run the same command again to retry them")
    return 0


if __name__ == "__main__":
    run_cli(main)
