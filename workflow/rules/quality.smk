rule inception_features:
    input:
        train=data_file("train.npy"),
        info=data_file("dataset.json"),
    output:
        "results/quality/{dataset}/train_features.npz",
    log:
        "logs/quality/{dataset}.features.log",
    benchmark:
        "results/benchmarks/quality/{dataset}.features.tsv"
    conda:
        "../envs/quality.yaml"
    threads: rule_threads("inception_features")
    resources:
        **rule_resources("inception_features"),
    params:
        args=options("quality", QUALITY, "features"),
        gpus=gpus("inception_features"),
    shell:
        "medmem features {input.train} {output} --info {input.info} {params.args} {params.gpus}"
        " > {log} 2>&1"


rule quality:
    input:
        samples=model_samples,
        features="results/quality/{dataset}/train_features.npz",
        encoder=detector_files("results/detector/{dataset}/detector.pt"),
        encoder_train=detector_files(data_file("train.npy")),
        encoder_meta=detector_files(data_file("slices.csv"), data_file("dataset.json")),
    output:
        "results/quality/{dataset}/{model}.json",
    log:
        "logs/quality/{dataset}.{model}.log",
    benchmark:
        "results/benchmarks/quality/{dataset}.{model}.tsv"
    conda:
        "../envs/quality.yaml"
    threads: rule_threads("quality")
    resources:
        **rule_resources("quality"),
    params:
        args=options("quality", QUALITY, "quality"),
        gpus=gpus("quality"),
        encoder=optional("--encoder", "encoder"),
        train=optional("--train", "encoder_train"),
    shell:
        "medmem quality {input.samples} {input.features} {output} {params.args} {params.gpus}"
        " {params.encoder} {params.train} > {log} 2>&1"
