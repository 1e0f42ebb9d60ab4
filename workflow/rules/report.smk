rule report_figures:
    input:
        table="results/memorization/{dataset}/{model}.parquet",
        holdout="results/memorization/{dataset}/holdout.parquet",
        baseline="results/memorization/{dataset}/holdout_baseline.csv",
        calibration="results/memorization/{dataset}/calibration.csv",
        quality="results/quality/{dataset}/{model}.json",
        samples=model_samples,
        sampling=lambda w: [s[: -len(".npy")] + ".json" for s in model_samples(w)][:1],
        train=data_file("train.npy"),
        slices=data_file("slices.csv"),
        info=data_file("dataset.json"),
        curve=training_curve,
        detector=detector_tables(["{model}"]),
        detector_holdout=detector_tables(["holdout"]),
    output:
        histogram=report(
            "results/report/{dataset}/{model}/histogram.png",
            caption="../report/histogram.rst",
            category="{dataset}",
            subcategory=report_group,
            labels={"figure": "highest correlation"},
        ),
        pairs=report(
            "results/report/{dataset}/{model}/pairs.png",
            caption="../report/pairs.rst",
            category="{dataset}",
            subcategory=report_group,
            labels={"figure": "most correlated pairs"},
        ),
        samples=report(
            "results/report/{dataset}/{model}/samples.png",
            caption="../report/samples.rst",
            category="{dataset}",
            subcategory=report_group,
            labels={"figure": "samples"},
        ),
        training=report(
            "results/report/{dataset}/{model}/training.png",
            caption="../report/training.rst",
            category="{dataset}",
            subcategory=report_group,
            labels={"figure": "training curves"},
        ),
        view_pairs=report(
            "results/report/{dataset}/{model}/view_pairs.png",
            caption="../report/view_pairs.rst",
            category="{dataset}",
            subcategory=report_group,
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
        args=memorization_options("report figures"),
        label=label_option,
        kind=model_type,
        curve=optional("--curve", "curve"),
        detector=optional("--detector", "detector"),
        detector_holdout=optional("--detector-holdout", "detector_holdout"),
    shell:
        "medmem report figures --dataset {wildcards.dataset} --model {wildcards.model}"
        " {params.label} --type {params.kind} --table {input.table}"
        " --holdout {input.holdout} --baseline {input.baseline} --calibration {input.calibration}"
        " --quality {input.quality} --samples {input.samples} --sampling {input.sampling}"
        " --train {input.train} --slices {input.slices} --info {input.info} {params.curve}"
        " {params.detector} {params.detector_holdout} {params.args}"
        " --histogram-figure {output.histogram} --pairs-figure {output.pairs}"
        " --samples-figure {output.samples} --training-figure {output.training}"
        " --view-pairs-figure {output.view_pairs} --flags {output.flags} --row {output.row}"
        " > {log} 2>&1"


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
        "medmem report summary {output.table} {output.markdown} {output.figure} {input}"
        " > {log} 2>&1"
