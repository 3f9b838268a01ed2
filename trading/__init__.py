"""Risk engine, order manager, reconciliation and the backtest engine shared with live trading."""
