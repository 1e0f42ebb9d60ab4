rule detector_train:
    input:
        train="results/data/{dataset}/train.npy",
        slices="results/data/{dataset}/slices.csv",
        info="results/data/{dataset}/dataset.json",
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
        args=detector_train_args,
        device=MEMORIZATION["device"],
    shell:
        "medmem detector-train results/data/{wildcards.dataset} {output.weights} {params.args}"
        " --device {params.device} --threads {threads} > {log} 2>&1"


rule detector_search:
    input:
        weights="results/detector/{dataset}/detector.pt",
        train="results/data/{dataset}/train.npy",
        slices="results/data/{dataset}/slices.csv",
        info="results/data/{dataset}/dataset.json",
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
        top_k=MEMORIZATION["top_k"],
        device=MEMORIZATION["device"],
    shell:
        "medmem detector-search results/data/{wildcards.dataset} {input.weights} {input.queries}"
        " {output} --top-k {params.top_k} --device {params.device} > {log} 2>&1"
