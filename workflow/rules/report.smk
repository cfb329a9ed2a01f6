rule report:
    input:
        unpack(report_inputs),
    output:
        "results/{scene}/report.html",
    log:
        "logs/report/{scene}.log",
    benchmark:
        "benchmarks/report/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "neus-stage report --scene-dir results/{wildcards.scene} --benchmarks benchmarks"
        " --out {output} > {log} 2>&1"
