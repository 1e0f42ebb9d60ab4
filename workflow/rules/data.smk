rule phantoms:
    output:
        directory("results/phantoms/{dataset}"),
    log:
        "logs/phantoms/{dataset}.log",
    benchmark:
        "results/benchmarks/phantoms/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(
            datasets_of("brats", phantom=True) + datasets_of("cxr", phantom=True)
        ),
    conda:
        "../envs/data.yaml"
    threads: rule_threads("phantoms")
    resources:
        **rule_resources("phantoms"),
    params:
        kind=dataset_kind,
        args=phantom_args,
    shell:
        "medmem phantoms {params.kind} {output} {params.args} --workers {threads} > {log} 2>&1"


rule prepare_brats:
    input:
        source=dataset_source,
        subject_order=subject_order_input,
    output:
        train=data_file("train.npy"),
        holdout=data_file("holdout.npy"),
        slices=data_file("slices.csv"),
        info=data_file("dataset.json"),
        skipped=data_file("skipped.csv"),
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "results/benchmarks/data/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(datasets_of("brats")),
    conda:
        "../envs/data.yaml"
    threads: rule_threads("prepare_brats")
    resources:
        **rule_resources("prepare_brats"),
    params:
        folder=prepared_folder,
        split=brats_split_args,
        size=dataset_size,
        skip_bad=skip_bad_flag,
    shell:
        "medmem prepare brats {input.source} {params.folder} {params.split}"
        " --size {params.size} {params.skip_bad} --workers {threads} > {log} 2>&1"


rule prepare_cxr:
    input:
        source=dataset_source,
    output:
        train=data_file("train.npy"),
        holdout=data_file("holdout.npy"),
        slices=data_file("slices.csv"),
        info=data_file("dataset.json"),
        skipped=data_file("skipped.csv"),
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "results/benchmarks/data/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(datasets_of("cxr")),
    conda:
        "../envs/data.yaml"
    threads: rule_threads("prepare_cxr")
    resources:
        **rule_resources("prepare_cxr"),
    params:
        folder=prepared_folder,
        split=cxr_split_args,
        size=dataset_size,
        skip_bad=skip_bad_flag,
    shell:
        "medmem prepare cxr {input.source} {params.folder} {params.split}"
        " --size {params.size} {params.skip_bad} --workers {threads} > {log} 2>&1"


rule prepare_images:
    input:
        source=dataset_source,
        holdout=holdout_source_input,
    output:
        train=data_file("train.npy"),
        holdout=data_file("holdout.npy"),
        slices=data_file("slices.csv"),
        info=data_file("dataset.json"),
        skipped=data_file("skipped.csv"),
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "results/benchmarks/data/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(datasets_of("images")),
    conda:
        "../envs/data.yaml"
    threads: rule_threads("prepare_images")
    resources:
        **rule_resources("prepare_images"),
    params:
        folder=prepared_folder,
        split=images_split_args,
        size=dataset_size,
    shell:
        "medmem prepare images {input.source} {params.folder} {params.split}"
        " --size {params.size} --workers {threads} > {log} 2>&1"


rule prepare_subset:
    input:
        train=subset_parent_file("train.npy"),
        holdout=subset_parent_file("holdout.npy"),
        slices=subset_parent_file("slices.csv"),
        info=subset_parent_file("dataset.json"),
    output:
        train=data_file("train.npy"),
        holdout=data_file("holdout.npy"),
        slices=data_file("slices.csv"),
        info=data_file("dataset.json"),
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "results/benchmarks/data/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(subset_datasets()),
    conda:
        "../envs/data.yaml"
    threads: rule_threads("prepare_subset")
    resources:
        **rule_resources("prepare_subset"),
    params:
        folder=prepared_folder,
        subset=subset_args,
    shell:
        "medmem subset {input.train} {params.folder} {params.subset} --slices {input.slices}"
        " --info {input.info} --holdout {input.holdout} > {log} 2>&1"
