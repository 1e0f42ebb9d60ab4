# Experiments: every generator tagged `experiment: {name, x, axis}` is one point; one figure, table and
# finding per experiment name, from the generators' summary rows (results/report/DATASET/NAME/row.json).


rule report_experiment:
    input:
        rows=experiment_rows,
    output:
        figure=report(
            "results/report/experiments/{experiment}/figure.png",
            caption="../report/experiment.rst",
            category="Experiments",
            subcategory=experiment_title,
            labels={"figure": "memorization and quality"},
        ),
        table=report(
            "results/report/experiments/{experiment}/table.csv",
            caption="../report/experiment_table.rst",
            category="Experiments",
            subcategory=experiment_title,
            labels={"figure": "table"},
        ),
        markdown="results/report/experiments/{experiment}/table.md",
    log:
        "logs/report/experiment.{experiment}.log",
    benchmark:
        "results/benchmarks/report/experiment.{experiment}.tsv"
    wildcard_constraints:
        experiment=one_of(EXPERIMENTS),
    conda:
        "../envs/report.yaml"
    params:
        experiment=experiment_param("name"),
        axis=experiment_param("axis"),
        x=experiment_param("x"),
        points=experiment_param("points"),
    shell:
        "medmem report experiment {params.experiment:q} --axis {params.axis:q} --rows {input.rows}"
        " --x {params.x:q} --figure {output.figure} --table {output.table}"
        " --markdown {output.markdown} > {log} 2>&1"
