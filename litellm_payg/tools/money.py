"""Dollar amounts as every output of the tools prints them: one helper, so a table, a chart and a
page say the same number.

A fixed two decimals turns a $0.0005 budget limit into "$0.00" and a $0.02472 run into "$0.02";
below $1 an amount keeps four significant digits instead (trailing zeros dropped, never fewer than
two decimals), so small amounts stay readable and different amounts stay different.
"""

from __future__ import annotations

import math

#: significant digits kept below $1
DIGITS = 4


def usd(x: float) -> str:
    """``$1,234.50``, ``$0.24``, ``$0.02472``, ``$0.0005``, ``-$0.0001234``, ``$0``."""
    if x == 0:
        return "$0"
    sign, a = ("-" if x < 0 else ""), abs(x)
    if a >= 1:
        return f"{sign}${a:,.2f}"
    decimals = max(2, DIGITS - 1 - math.floor(math.log10(a)))
    text = f"{a:.{decimals}f}"
    if text == "1.00":  # 0.99999 rounds up to a dollar: print it as one
        return f"{sign}$1.00"
    whole, frac = text.split(".")
    frac = frac.rstrip("0")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"
