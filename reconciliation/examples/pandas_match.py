#!/usr/bin/env python3
"""The reconciliation matching of `cva_reconciliation::matching` done with pandas merges, for
comparison with `examples/reconcile_bench.rs`, which runs this script on the same files in the
same run (`--pandas`).

This script installs nothing. Install pandas first:

    python3 -m pip install pandas

Usage:

    pandas_match.py --payments payments.csv --statement statement.csv [--window-days 3]

Inputs:

* payments.csv: `line,provider_tx,payee_key,amount,fee,currency,status,at` — our batch lines as
  the matcher sees them (`status` completed / failed / unknown / in_flight, a line reversed
  before counting as completed), `payee_key` the payee's number as digits (`22370000123`).
* statement.csv: the provider statement in the simulator format
  (`transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after`).

The matching (timed as `match_s`; reading and parsing both files is `load_s`):

1. statement rows: among non-reversal rows the first of each transaction id takes part, the
   others are duplicates (reversal rows are grouped apart);
2. rule 1, a merge on provider transaction id = row transaction id;
3. rule 2, a merge of what is left on line id = the row's reference (digits), lowest row first;
4. rule 3, a merge of what is left on (payee, amount, currency) with |time difference| <= the
   window, pairs taken nearest first (ties: lowest line, then lowest row), one payment per row;
5. reversals attached to their original (row transaction id without `-REV`, else a payment's
   transaction id, else the reference), then the categories: reversed by provider, status
   mismatch, amount mismatch, fee mismatch, matched; missing (not failed, within the
   statement's period), unexpected (unmatched rows that moved money, lone reversals),
   duplicates.

Prints one JSON object: pandas version, load_s, match_s, counts per category, peak RSS.
"""

import argparse
import json
import resource
import sys
import time

import numpy as np
import pandas as pd

MOVES_FLOAT = ["completed", "reversed", "reversal"]


def load(payments_path, statement_path):
    pay = pd.read_csv(
        payments_path,
        dtype={
            "line": "int64",
            "provider_tx": "string",
            "payee_key": "string",
            "amount": "int64",
            "fee": "int64",
            "currency": "string",
            "status": "string",
        },
        keep_default_na=False,
        na_values={"provider_tx": [""], "payee_key": [""]},
    )
    pay["at"] = pd.to_datetime(pay["at"], utc=True, format="ISO8601")
    st = pd.read_csv(
        statement_path,
        dtype={
            "transaction_id": "string",
            "reference": "string",
            "msisdn": "string",
            "amount": "int64",
            "currency": "string",
            "fee": "int64",
            "status": "string",
            "balance_after": "Int64",
        },
        keep_default_na=False,
        na_values={"reference": [""], "msisdn": [""], "balance_after": [""]},
    )
    st["completed_at"] = pd.to_datetime(st["completed_at"], utc=True, format="ISO8601")
    st["row"] = np.arange(2, len(st) + 2, dtype="int64")
    return pay, st


def normalise_msisdn(s):
    """Digits only (blanks, - . ( ) removed), a leading + or 00 dropped; NA when anything else."""
    s = s.str.strip()
    plus = s.str.startswith("+").fillna(False)
    body = s.str.replace(r"^\+", "", regex=True).str.replace(r"[\s\-\.\(\)]", "", regex=True)
    body = body.where(body.str.fullmatch(r"\d+").fillna(False))
    body = body.where(plus | ~body.str.startswith("00").fillna(False), body.str.slice(2))
    return body.where(body.str.len() > 0)


def reference_line(ref):
    """The reference as a line id (decimal digits, blanks around allowed), else NA."""
    r = ref.str.strip()
    r = r.where(r.str.fullmatch(r"\d+").fillna(False))
    return pd.to_numeric(r, errors="coerce").astype("Int64")


def match(pay, st, window):
    pay = pay.sort_values("line", kind="stable")
    known_lines = pay["line"]

    # Statement: primaries (first of their transaction id), duplicates, reversals.
    is_rev = st["status"] == "reversal"
    dup = pd.Series(False, index=st.index)
    dup[~is_rev] = st.loc[~is_rev, "transaction_id"].duplicated(keep="first")
    dup[is_rev] = st.loc[is_rev, "transaction_id"].duplicated(keep="first")
    primary = st[~is_rev & ~dup].copy()
    reversals = st[is_rev & ~dup].copy()
    duplicates = int(dup.sum())
    primary["ref_line"] = reference_line(primary["reference"])
    primary["names_line"] = primary["ref_line"].isin(known_lines).fillna(False).astype(bool)

    # Rule 1: provider transaction id.
    p1 = (
        pay.loc[pay["provider_tx"].notna(), ["line", "provider_tx"]]
        .merge(
            primary[["row", "transaction_id"]],
            left_on="provider_tx",
            right_on="transaction_id",
        )
        .sort_values("line", kind="stable")
        .drop_duplicates("row")[["line", "row"]]
    )
    p1["rule"] = "provider_transaction_id"

    # Rule 2: reference = line id.
    left_pay = pay[~pay["line"].isin(p1["line"])]
    free = primary[~primary["row"].isin(p1["row"])]
    by_ref = free[free["names_line"]]
    p2 = (
        left_pay[["line"]]
        .merge(by_ref[["row", "ref_line"]].astype({"ref_line": "int64"}), left_on="line", right_on="ref_line")
        .sort_values("row", kind="stable")
        .drop_duplicates("line")[["line", "row"]]
    )
    p2["rule"] = "reference"

    # Rule 3: payee, amount, currency, nearest time within the window.
    left_pay = left_pay[~left_pay["line"].isin(p2["line"])]
    cands = free[~free["row"].isin(p2["row"]) & ~free["names_line"]].copy()
    cands["payee_key"] = normalise_msisdn(cands["msisdn"])
    cands = cands[cands["payee_key"].notna()]
    m = left_pay.loc[left_pay["payee_key"].notna(), ["line", "payee_key", "amount", "currency", "at"]].merge(
        cands[["row", "payee_key", "amount", "currency", "completed_at"]],
        on=["payee_key", "amount", "currency"],
    )
    m["dist"] = (m["at"] - m["completed_at"]).abs()
    m = m[m["dist"] <= window].sort_values(["dist", "line", "row"], kind="stable")
    taken = []
    # Greedy, nearest first: in each round, take the pairs that are the best of both their
    # payment and their row, drop those payments and rows, and go again.
    while len(m):
        best_line = m.drop_duplicates("line")
        best_row = m.drop_duplicates("row")
        both = best_line.merge(best_row[["line", "row"]], on=["line", "row"])
        taken.append(both[["line", "row"]])
        m = m[~m["line"].isin(both["line"]) & ~m["row"].isin(both["row"])]
    p3 = pd.concat(taken) if taken else pd.DataFrame({"line": [], "row": []}, dtype="int64")
    p3["rule"] = "payee_amount_date"

    pairs = pd.concat([p1, p2, p3], ignore_index=True)

    # Reversals: to the original row's payment (or the row), else a payment's transaction id,
    # else the payment named by the reference.
    reversals["orig"] = reversals["transaction_id"].str.replace(r"(?i)-rev$", "", regex=True)
    rv = reversals[["row", "orig", "reference"]].merge(
        primary[["row", "transaction_id"]].rename(columns={"row": "orow", "transaction_id": "orig"}),
        on="orig",
        how="left",
    )
    row_line = pairs.set_index("row")["line"]
    rv["pline"] = rv["orow"].map(row_line)
    to_payment = rv.loc[rv["pline"].notna(), "pline"]
    to_row = rv.loc[rv["orow"].notna() & rv["pline"].isna(), "orow"]
    rest = rv[rv["orow"].isna()].drop(columns=["pline"])
    by_tx = rest.merge(
        pay.loc[pay["provider_tx"].notna(), ["line", "provider_tx"]].drop_duplicates("provider_tx"),
        left_on="orig",
        right_on="provider_tx",
        how="left",
    )
    rest2 = by_tx[by_tx["line"].isna()].copy()
    rest2["ref_line"] = reference_line(rest2["reference"])
    named = rest2["ref_line"].isin(known_lines).fillna(False).astype(bool)
    reversed_lines = pd.concat(
        [
            to_payment.astype("int64"),
            by_tx.loc[by_tx["line"].notna(), "line"].astype("int64"),
            rest2.loc[named, "ref_line"].astype("int64"),
        ]
    )
    lone = int((~named).sum())

    # Pair categories.
    pr = pairs.merge(pay[["line", "amount", "fee", "currency", "status"]], on="line").merge(
        st[["row", "amount", "fee", "currency", "status"]].rename(
            columns={"amount": "s_amount", "fee": "s_fee", "currency": "s_currency", "status": "s_status"}
        ),
        on="row",
    )
    agrees = (
        ((pr["status"] == "completed") & pr["s_status"].isin(["completed", "reversed"]))
        | ((pr["status"] == "failed") & (pr["s_status"] == "failed"))
        | ((pr["status"] == "in_flight") & (pr["s_status"] == "pending"))
    )
    category = np.select(
        [
            pr["line"].isin(reversed_lines) | (pr["s_status"] == "reversed"),
            ~agrees,
            (pr["currency"] != pr["s_currency"]) | (pr["amount"] != pr["s_amount"]),
            (pr["status"] == "completed") & pr["s_status"].isin(MOVES_FLOAT) & (pr["fee"] != pr["s_fee"]),
        ],
        ["reversed_by_provider", "status_mismatch", "amount_mismatch", "fee_mismatch"],
        "matched",
    )
    counts = pd.Series(category).value_counts().to_dict()

    # Unmatched payments.
    unmatched = pay[~pay["line"].isin(pairs["line"])]
    rev_only = unmatched["line"].isin(reversed_lines)
    start, end = st["completed_at"].min(), st["completed_at"].max()
    inside = (unmatched["at"] >= start) & (unmatched["at"] <= end)
    missing = ~rev_only & (unmatched["status"] != "failed") & inside
    counts["reversed_by_provider"] = counts.get("reversed_by_provider", 0) + int(rev_only.sum())
    counts["missing_from_statement"] = int(missing.sum())
    skipped_payments = int((~rev_only & ~missing).sum())

    # Unmatched rows.
    left_rows = primary[~primary["row"].isin(pairs["row"])]
    has_rev = left_rows["row"].isin(to_row)
    moved = left_rows["status"].isin(["completed", "reversed"])
    counts["unexpected_in_statement"] = int((moved | has_rev).sum()) + lone
    skipped_rows = int((~moved & ~has_rev).sum())
    counts["duplicate_in_statement"] = duplicates

    out = {
        c: int(counts.get(c, 0))
        for c in [
            "matched",
            "amount_mismatch",
            "fee_mismatch",
            "status_mismatch",
            "missing_from_statement",
            "unexpected_in_statement",
            "duplicate_in_statement",
            "reversed_by_provider",
        ]
    }
    out["skipped_payments"] = skipped_payments
    out["skipped_rows"] = skipped_rows
    rules = pairs["rule"].value_counts().to_dict()
    return out, {k: int(v) for k, v in rules.items()}


def peak_rss_mb():
    """This process's peak RSS: VmHWM (ru_maxrss would report the parent's peak when the
    parent's was higher at the fork before exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--payments", required=True)
    ap.add_argument("--statement", required=True)
    ap.add_argument("--window-days", type=float, default=3.0)
    args = ap.parse_args()

    t = time.perf_counter()
    pay, st = load(args.payments, args.statement)
    load_s = time.perf_counter() - t

    t = time.perf_counter()
    counts, rules = match(pay, st, pd.Timedelta(days=args.window_days))
    match_s = time.perf_counter() - t

    json.dump(
        {
            "pandas": pd.__version__,
            "python": sys.version.split()[0],
            "payments": int(len(pay)),
            "rows": int(len(st)),
            "load_s": round(load_s, 3),
            "match_s": round(match_s, 3),
            "counts": counts,
            "pairs_by_rule": rules,
            "peak_rss_mb": peak_rss_mb(),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
