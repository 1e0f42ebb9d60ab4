rule detector_train:
    input:
        train=data_file("train.npy"),
        slices=data_file("slices.csv"),
        info=data_file("dataset.json"),
    output:
        weights="results/detector/{dataset}/detector.pt",
        log="results/detector/{dataset}/detector.pt.json",
    log:
        "logs/detector/{dataset}.train.log",
    benchmark:
        "results/benchmarks/detector/{dataset}.train.tsv"
    conda:
        "../envs/detector.yaml"
    threads: rule_threads("detector_train")
    resources:
        **rule_resources("detector_train"),
    params:
        args=options("memorization.detector", DETECTOR, "detector-train"),
        device=memorization_options("detector-train"),
    shell:
        "medmem detector-train {input.train} {output.weights} --slices {input.slices}"
        " --info {input.info} {params.args} {params.device} --threads {threads} > {log} 2>&1"


rule detector_search:
    input:
        weights="results/detector/{dataset}/detector.pt",
        train=data_file("train.npy"),
        slices=data_file("slices.csv"),
        info=data_file("dataset.json"),
        queries=query_images,
    output:
        "results/detector/{dataset}/{queries}.parquet",
    log:
        "logs/detector/{dataset}.{queries}.log",
    benchmark:
        "results/benchmarks/detector/{dataset}.{queries}.tsv"
    conda:
        "../envs/detector.yaml"
    params:
        args=memorization_options("detector-search"),
    shell:
        "medmem detector-search {input.train} {input.weights} {input.queries} {output}"
        " --slices {input.slices} --info {input.info} {params.args} > {log} 2>&1"
