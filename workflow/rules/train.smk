# Training: one job (segment_kimg null), or a chain of segment jobs, each ending at a multiple of
# segment_kimg with its checkpoint (temporary: removed once the next segment has its own), then the
# job that writes network.pt. Every job stops before its runtime with a checkpoint (exit status 75);
# the profile's retries or a plain rerun continue from there. One pair of rules per generator type;
# the wildcard `model` is a generator's name (config `models`).


rule train_stylegan2_segment:
    input:
        train=data_file("train.npy"),
        info=data_file("dataset.json"),
        previous=previous_segment,
    output:
        checkpoint=temp("results/train/{dataset}/{model}/segments/{kimg}kimg.pt"),
    log:
        "logs/train/{dataset}.{model}.{kimg}kimg.log",
    benchmark:
        "results/benchmarks/train/{dataset}.{model}.{kimg}kimg.tsv"
    wildcard_constraints:
        model=one_of(trained_models("stylegan2")),
        kimg=r"[0-9.]+",
    conda:
        "../envs/train.yaml"
    threads: rule_threads("train_stylegan2")
    resources:
        **rule_resources("train_stylegan2"),
    params:
        run=train_run,
        args=model_options("train"),
        resume=resume_arg,
        gpus=gpus("train_stylegan2"),
    shell:
        "medmem train stylegan2 {input.train} {params.run}"
        " --info {input.info} {params.args} --no-progress {params.resume}"
        " --stop-kimg {wildcards.kimg} --segment-output {output.checkpoint}"
        " --time-limit-min {resources.runtime} {params.gpus} > {log} 2>&1"


rule train_stylegan2:
    input:
        train=data_file("train.npy"),
        info=data_file("dataset.json"),
        previous=previous_segment,
    output:
        network="results/train/{dataset}/{model}/network.pt",
        curve="results/train/{dataset}/{model}/log.csv",
    log:
        "logs/train/{dataset}.{model}.log",
    benchmark:
        "results/benchmarks/train/{dataset}.{model}.tsv"
    wildcard_constraints:
        model=one_of(trained_models("stylegan2", keeping=False)),
    conda:
        "../envs/train.yaml"
    threads: rule_threads("train_stylegan2")
    resources:
        **rule_resources("train_stylegan2"),
    params:
        run=train_run,
        args=model_options("train"),
        resume=resume_arg,
        gpus=gpus("train_stylegan2"),
    shell:
        "medmem train stylegan2 {input.train} {params.run}"
        " --info {input.info} {params.args} --no-progress {params.resume}"
        " --time-limit-min {resources.runtime} {params.gpus} > {log} 2>&1"


rule train_diffusion_segment:
    input:
        train=data_file("train.npy"),
        info=data_file("dataset.json"),
        previous=previous_segment,
    output:
        checkpoint=temp("results/train/{dataset}/{model}/segments/{kimg}kimg.pt"),
    log:
        "logs/train/{dataset}.{model}.{kimg}kimg.log",
    benchmark:
        "results/benchmarks/train/{dataset}.{model}.{kimg}kimg.tsv"
    wildcard_constraints:
        model=one_of(trained_models("diffusion")),
        kimg=r"[0-9.]+",
    conda:
        "../envs/train.yaml"
    threads: rule_threads("train_diffusion")
    resources:
        **rule_resources("train_diffusion"),
    params:
        run=train_run,
        args=model_options("train"),
        resume=resume_arg,
        gpus=gpus("train_diffusion"),
    shell:
        "medmem train diffusion {input.train} {params.run}"
        " --info {input.info} {params.args} --no-progress {params.resume}"
        " --stop-kimg {wildcards.kimg} --segment-output {output.checkpoint}"
        " --time-limit-min {resources.runtime} {params.gpus} > {log} 2>&1"


rule train_diffusion:
    input:
        train=data_file("train.npy"),
        info=data_file("dataset.json"),
        previous=previous_segment,
    output:
        network="results/train/{dataset}/{model}/network.pt",
        curve="results/train/{dataset}/{model}/log.csv",
    log:
        "logs/train/{dataset}.{model}.log",
    benchmark:
        "results/benchmarks/train/{dataset}.{model}.tsv"
    wildcard_constraints:
        model=one_of(trained_models("diffusion", keeping=False)),
    conda:
        "../envs/train.yaml"
    threads: rule_threads("train_diffusion")
    resources:
        **rule_resources("train_diffusion"),
    params:
        run=train_run,
        args=model_options("train"),
        resume=resume_arg,
        gpus=gpus("train_diffusion"),
    shell:
        "medmem train diffusion {input.train} {params.run}"
        " --info {input.info} {params.args} --no-progress {params.resume}"
        " --time-limit-min {resources.runtime} {params.gpus} > {log} 2>&1"


# A generator with keep_kimg: its last training job also delivers the networks kept along training
# (network-<k>kimg.pt, a list of its own), so it has a rule of its own, train_<type>_<name>_kept,
# the same command as its type's rule above; its segments are its type's segment jobs.
for _model in trained_models("stylegan2", "diffusion", keeping=True):
    _type = MODELS[_model]["type"]

    rule:
        name:
            keep_rule_name(_model)
        input:
            train=data_file("train.npy"),
            info=data_file("dataset.json"),
            previous=previous_segment,
        output:
            network="results/train/{dataset}/{model}/network.pt",
            curve="results/train/{dataset}/{model}/log.csv",
            kept=kept_networks(_model),
        log:
            "logs/train/{dataset}.{model}.log",
        benchmark:
            "results/benchmarks/train/{dataset}.{model}.tsv"
        wildcard_constraints:
            model=one_of([_model]),
        conda:
            "../envs/train.yaml"
        threads: rule_threads(f"train_{_type}")
        resources:
            **rule_resources(f"train_{_type}"),
        params:
            kind=_type,
            run=train_run,
            args=model_options("train"),
            resume=resume_arg,
            gpus=gpus(f"train_{_type}"),
        shell:
            "medmem train {params.kind} {input.train} {params.run}"
            " --info {input.info} {params.args} --no-progress {params.resume}"
            " --time-limit-min {resources.runtime} {params.gpus} > {log} 2>&1"
