rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        "results/{scene}/eval.json",
    log:
        "logs/evaluate/{scene}.log",
    benchmark:
        "benchmarks/evaluate/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        args=evaluate_args,
    shell:
        NEUS_STAGE
        + " --log {log} evaluate --mesh {input.mesh} --out {output} {params.args}"
        " --error-cloud results/{wildcards.scene}/eval_errors.ply"
