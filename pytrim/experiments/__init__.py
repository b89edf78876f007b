"""Runs built from the pipeline: the criteria sweep (`sweep*`, `pruners`), NN Relief's rounds
(`relief`), synthetic runs and coverage (`synthetic`), VGG-16 (`vgg16`), the benchmarks
(`bench_*`; bench-peers' files for the torch side and its table: `peers_files`,
`peers_report`), and the results of record with the tables the documentation draws from them
(`record`, `tables`).

Layer: above loop; imports loop and every layer below it; only the command line imports it.
"""
