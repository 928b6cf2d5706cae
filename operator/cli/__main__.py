"""``python -m soberana.operator.cli``: the same as the ``soberana`` console script."""

from soberana.operator.cli import main

main()
