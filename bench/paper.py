"""The method paper's numbers, as printed, for the tables our reports put beside them (one copy:
the campaign's report reads them from here)."""

# Table 3: meta-validation accuracy (%), few-shot Omniglot, 1-shot, by number of ways.
TABLE3_WAYS = [2, 3, 5, 10]
TABLE3 = {
    "FO": ["87.31 ± 1.79", "78.22 ± 1.04", "69.71 ± 0.5", "62.41 ± 1.95"],
    "T1-T2": ["89.4 ± 0.36", "78.25 ± 1.03", "66.7 ± 3.09", "52.23 ± 1.63"],
    "IFT(2)": ["87.1 ± 2.52", "79.36 ± 2.31", "72.57 ± 2.14", "53.62 ± 5.92"],
    "greedy 0.9": ["93.5 ± 0.34", "86.83 ± 0.78", "80.46 ± 1.08", "66.92 ± 2.04"],
}

# Table 2: validation accuracy (%) of data hyper-cleaning, 5 trials, by (dataset, noise).
TABLE2_SETTINGS = [("mnist", 0.3), ("mnist", 0.5), ("fashion_mnist", 0.3), ("fashion_mnist", 0.5)]
TABLE2 = {
    "w/o HPO": ["70.46 ± 5.47", "51.52 ± 1.61", "59.46 ± 4.12", "53.99 ± 6.88"],
    "T1-T2": ["66.93 ± 1.2", "51.86 ± 2.77", "62.07 ± 4.41", "51.40 ± 5.53"],
    "IFT(5)": ["71.97 ± 4.54", "54.14 ± 6.66", "60.63 ± 5.03", "47.68 ± 1.51"],
    "greedy 0.9": ["87.06 ± 0.77", "77.73 ± 1.70", "72.57 ± 1.09", "66.21 ± 1.50"],
}

# our row label -> the paper's
NAMES = {"greedy 0.9": "Ours (gamma=0.9)"}
