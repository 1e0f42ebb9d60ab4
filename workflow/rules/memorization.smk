rule plant:
    input:
        train=data_file("train.npy"),
        holdout=data_file("holdout.npy"),
        info=data_file("dataset.json"),
    output:
        images="results/memorization/{dataset}/planted.npy",
        manifest="results/memorization/{dataset}/planted.csv",
    log:
        "logs/memorization/{dataset}.plant.log",
    benchmark:
        "results/benchmarks/memorization/{dataset}.plant.tsv"
    conda:
        "../envs/memorization.yaml"
    params:
        args=options("memorization.planted", MEMORIZATION["planted"], "plant"),
    shell:
        "medmem plant {input.train} {output.images} {output.manifest} --holdout-images {input.holdout}"
        " --info {input.info} {params.args} > {log} 2>&1"


rule memorization_shard:
    input:
        train=data_file("train.npy"),
        slices=data_file("slices.csv"),
        info=data_file("dataset.json"),
        queries=query_images,
    output:
        (
            temp("results/memorization/{dataset}/shards/{queries}.{shard}.parquet")
            if SHARDED
            else "results/memorization/{dataset}/{queries}.parquet"
        ),
    log:
        shard_path("logs/memorization/{{dataset}}.{{queries}}{shard}.log"),
    benchmark:
        shard_path("results/benchmarks/memorization/{{dataset}}.{{queries}}{shard}.tsv")
    wildcard_constraints:
        shard=r"\d+-of-\d+",
    conda:
        "../envs/memorization.yaml"
    threads: rule_threads("memorization_shard")
    resources:
        **rule_resources("memorization_shard"),
    params:
        shard=shard_arg,
        args=memorization_options("memorization"),
        gpus=gpus("memorization_shard"),
    shell:
        "medmem memorization {input.train} {input.queries} {output} --slices {input.slices}"
        " --info {input.info} --shard {params.shard} {params.args} --threads {threads} {params.gpus}"
        " > {log} 2>&1"


if SHARDED:

    rule memorization_gather:
        input:
            shard_tables,
        output:
            "results/memorization/{dataset}/{queries}.parquet",
        log:
            "logs/memorization/{dataset}.{queries}.gather.log",
        benchmark:
            "results/benchmarks/memorization/{dataset}.{queries}.gather.tsv"
        conda:
            "../envs/memorization.yaml"
        shell:
            "medmem memorization-gather {output} {input} > {log} 2>&1"


rule calibrate:
    input:
        holdout="results/memorization/{dataset}/holdout.parquet",
        planted="results/memorization/{dataset}/planted.parquet",
        manifest="results/memorization/{dataset}/planted.csv",
        slices=data_file("slices.csv"),
        detector_holdout=detector_tables(["holdout"]),
        detector_planted=detector_tables(["planted"]),
    output:
        detection="results/memorization/{dataset}/calibration.csv",
        baseline="results/memorization/{dataset}/holdout_baseline.csv",
        summary="results/memorization/{dataset}/calibration.md",
    log:
        "logs/memorization/{dataset}.calibrate.log",
    benchmark:
        "results/benchmarks/memorization/{dataset}.calibrate.tsv"
    conda:
        "../envs/memorization.yaml"
    params:
        args=memorization_options("calibrate"),
        extra_holdout=optional("--extra-holdout", "detector_holdout"),
        extra_planted=optional("--extra-planted", "detector_planted"),
    shell:
        "medmem calibrate {input.slices} {input.holdout} {input.planted} {input.manifest}"
        " {output.detection} --baseline {output.baseline} --summary {output.summary}"
        " --dataset {wildcards.dataset} {params.args} {params.extra_holdout} {params.extra_planted}"
        " > {log} 2>&1"
