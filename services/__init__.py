"""The five avwap services. A service never imports another service; they share only ``shared``."""
