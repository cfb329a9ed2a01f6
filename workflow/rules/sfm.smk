rule sfm:
    input:
        photos=photo_files,
    output:
        report="results/{scene}/sfm/report.json",
        undistorted=directory("results/{scene}/sfm/undistorted"),
    params:
        photos=lambda wc: scene_row(wc).photos,
        matcher=config["sfm"]["matcher"],
        mapper=config["sfm"]["mapper"],
        camera_model=config["sfm"]["camera_model"],
        min_registered=config["sfm"]["min_registered"],
        max_image_size=config["sfm"]["max_image_size"],
    log:
        "logs/sfm/{scene}.log",
    benchmark:
        "benchmarks/sfm/{scene}.tsv"
    threads: 8
    resources:
        mem_mb=8000,
    shell:
        "neus-stage sfm --photos {params.photos} --out results/{wildcards.scene}/sfm"
        " --matcher {params.matcher} --mapper {params.mapper} --camera-model {params.camera_model}"
        " --min-registered {params.min_registered} --max-image-size {params.max_image_size}"
        " --threads {threads} > {log} 2>&1"
