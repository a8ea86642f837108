"""From what bench.run measured to what it reports: a row's rounds merged into one row, the ratios between rows (per
round, then their median) against their targets, the warnings, and the table printed at the end."""

import statistics

from bench.machine import OTHER_CPU_LIMIT
from bench.rows import RATIOS, ROWS


def merge_rounds(rounds):
    """One row from its rounds: every run, their median, each round's median (``per_round``, what ratios pair up),
    the most disturbed round's CPU report, and the last round's details."""
    merged = dict(rounds[-1])
    merged["runs"] = [value for measured in rounds for value in measured["runs"]]
    merged["median"] = statistics.median(merged["runs"])
    merged["per_round"] = [measured["median"] for measured in rounds]
    merged["cpu"] = max((measured["cpu"] for measured in rounds), key=lambda cpu: cpu["other_cpu_fraction"])
    merged["attempts"] = sum(measured["attempts"] for measured in rounds)
    if "precision" in merged:  # what ran in each round (train.py's self-check decides anew in every process)
        merged["precision_per_round"] = [measured.get("precision") for measured in rounds]
        used = sorted(set(map(str, merged["precision_per_round"])))
        merged["precision"] = used[0] if len(used) == 1 else "mixed: " + ", ".join(used)
    return merged


def ratios(rows):
    """Each of RATIOS over the merged ``rows``: its per-round values, their median, and whether it meets its target."""
    found = {}
    for ratio in RATIOS:
        per_round = []
        if ratio.numerator in rows and ratio.denominator in rows:
            pairs = zip(rows[ratio.numerator]["per_round"], rows[ratio.denominator]["per_round"])
            per_round = [a - b if ratio.difference else a / b for a, b in pairs]
        value = statistics.median(per_round) if per_round else None
        met = None if value is None or ratio.target is None else \
            (value <= ratio.target if ratio.at_most else value >= ratio.target)
        found[ratio.key] = {"value": value, "per_round": per_round, "target": ratio.target,
                            "at_most": ratio.at_most, "met": met, "meaning": ratio.meaning}
    return found


def warnings(rows, quick):
    """What makes the numbers of ``rows`` other than they seem: a precision that did not run, a busy machine."""
    found = []
    for key, row in rows.items():
        if "precision" in row and row["precision"] != row.get("precision_requested"):
            found.append(f"{key} ran {row['precision']}, not {row['precision_requested']}: train.py's speed "
                         f"self-check found {row['precision_requested']} not faster than fp32 on this CPU (in some "
                         f"or all rounds), so its numbers and ratios are fp32's")
    busy = [k for k, r in rows.items() if r["cpu"]["other_cpu_fraction"] > OTHER_CPU_LIMIT]
    if busy:
        found.append(f"other processes used >5% of the CPU during {', '.join(busy)}: those numbers are low; run the "
                     f"bench on an idle machine")
    if quick:
        found.append("--quick: a smoke test of the harness, the numbers mean nothing")
    return found


def fmt(value):
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def print_table(results):
    machine = results["machine"]
    print(f"\nXvision-MX bench  {results['date']}  ({'quick' if results['quick'] else 'full'})")
    generation = f", {machine['cpu_generation']}" if machine.get("cpu_generation") else ""
    print(f"machine: {machine['cpu']} (family/model {machine['cpu_family_model']}{generation}), "
          f"{machine['usable_cores']} usable "
          f"cores, {machine['threads_per_core']} thread(s)/core, {machine['memory_total']}, "
          f"{'VM' if machine['hypervisor'] else 'bare metal'}")
    print(f"flags: {' '.join(machine['flags'])}; OMP_NUM_THREADS={machine['omp_num_threads']}; "
          f"mxnet {machine['mxnet']}, torch {results['rows'].get('peer_torch', {}).get('torch', '-')}")
    s = results["settings"]
    if s:
        print(f"inputs: {s['images']} PNGs for end-to-end, {s['mem_images']} for the large memory set "
              f"({s['png_size']}, mean {s['png_mean_bytes'] / 1024:.0f} KiB, page cache {s['page_cache']}); batch "
              f"{s['batch_size']}; medians of {s['runs']} round(s), each row once per round\n")
    width = max(len(r.label) for r in ROWS) + 2
    print(f"{'row':<{width}}{'median':>10}  {'unit':<10}{'runs':<34}{'other CPU':>9}")
    for row in ROWS:
        if row.key in results["skipped"]:
            print(f"{row.label:<{width}}{'skipped':>10}  {'':<10}{results['skipped'][row.key]}")
            continue
        r = results["rows"][row.key]
        runs = " ".join(fmt(v) for v in r["runs"][:6]) + (f"  (n={r['images']})" if "images" in r else "")
        ran = f"  [ran {r['precision']}]" if r.get("precision", r.get("precision_requested")) != \
            r.get("precision_requested") else ""
        print(f"{row.label:<{width}}{fmt(r['median']):>10}  {row.unit:<10}{runs + ran:<34}"
              f"{r['cpu']['other_cpu_fraction'] * 100:>8.0f}%")
    print(f"\n{'ratio':<32}{'value':>8}  {'target':<10}{'met':<5}{'per round':<20}meaning")
    for key, ratio in results["ratios"].items():
        target = "-" if ratio["target"] is None else f"{'<=' if ratio['at_most'] else '>='} {ratio['target']}"
        met = "-" if ratio["met"] is None else ("yes" if ratio["met"] else "NO")
        rounds = " ".join(fmt(v) for v in ratio["per_round"])
        print(f"{key:<32}{fmt(ratio['value']):>8}  {target:<10}{met:<5}{rounds:<20}{ratio['meaning']}")
    for warning in results["warnings"]:
        print(f"warning: {warning}")
