rule report_figures:
    input:
        table="results/memorization/{dataset}/{model}.parquet",
        holdout="results/memorization/{dataset}/holdout.parquet",
        baseline="results/memorization/{dataset}/holdout_baseline.csv",
        calibration="results/memorization/{dataset}/calibration.csv",
        quality="results/quality/{dataset}/{model}.json",
        samples=model_samples,
        train="results/data/{dataset}/train.npy",
        curve="results/train/{dataset}/{model}/log.csv",
        detector=detector_tables(["holdout", "{model}"]),
    output:
        histogram=report(
            "results/report/{dataset}/{model}/histogram.png",
            caption="../report/histogram.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"figure": "highest correlation"},
        ),
        pairs=report(
            "results/report/{dataset}/{model}/pairs.png",
            caption="../report/pairs.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"figure": "most correlated pairs"},
        ),
        samples=report(
            "results/report/{dataset}/{model}/samples.png",
            caption="../report/samples.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"figure": "samples"},
        ),
        training=report(
            "results/report/{dataset}/{model}/training.png",
            caption="../report/training.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"figure": "training curves"},
        ),
        view_pairs=report(
            "results/report/{dataset}/{model}/view_pairs.png",
            caption="../report/view_pairs.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"figure": "top samples per view"},
        ),
        flags="results/report/{dataset}/{model}/flags.csv",
        row="results/report/{dataset}/{model}/row.json",
    log:
        "logs/report/{dataset}.{model}.log",
    benchmark:
        "results/benchmarks/report/{dataset}.{model}.tsv"
    conda:
        "../envs/report.yaml"
    params:
        combine=" ".join(MEMORIZATION["combine"]),
    shell:
        "medmem report figures results {wildcards.dataset} {wildcards.model}"
        " results/report/{wildcards.dataset}/{wildcards.model} --combine {params.combine}"
        " --samples {input.samples} > {log} 2>&1"


rule report_summary:
    input:
        report_rows(),
    output:
        table=report(
            "results/report/summary.csv",
            caption="../report/summary_table.rst",
            category="Summary",
            labels={"figure": "summary table"},
        ),
        markdown="results/report/summary.md",
        figure=report(
            "results/report/summary.png",
            caption="../report/summary_figure.rst",
            category="Summary",
            labels={"figure": "likely copies by dataset and model"},
        ),
    log:
        "logs/report/summary.log",
    benchmark:
        "results/benchmarks/report/summary.tsv"
    conda:
        "../envs/report.yaml"
    shell:
        "medmem report summary results/report {input} > {log} 2>&1"
