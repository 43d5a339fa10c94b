"""factinject: teach a language model new facts and prove it did."""

__version__ = "0.1.0"
