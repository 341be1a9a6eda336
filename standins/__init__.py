"""Local stand-ins of the external services (Alpaca trading, market data and trade updates; Slack).

They listen on 127.0.0.1 only and ship with the project because `avwap rehearse` runs the whole
system against them on a laptop with no broker account and no internet; the tests use them too.
"""
