rule sfm:
    input:
        photos=photo_files,
    output:
        report="results/{scene}/sfm/report.json",
        undistorted=directory("results/{scene}/sfm/undistorted"),
    log:
        "logs/sfm/{scene}.log",
    benchmark:
        "benchmarks/sfm/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 8
    resources:
        mem_mb=8000,
    params:
        photos=lambda wc: scene_row(wc).photos,
        matcher=config["sfm"]["matcher"],
        mapper=config["sfm"]["mapper"],
        camera_model=config["sfm"]["camera_model"],
        min_registered=config["sfm"]["min_registered"],
        max_image_size=config["sfm"]["max_image_size"],
        max_features=config["sfm"]["max_features"],
        first_octave=config["sfm"]["first_octave"],
        max_size=config["images"]["max_size"],
    shell:
        NEUS_STAGE
        + " --log {log} sfm --photos {params.photos:q} --out results/{wildcards.scene}/sfm"
        " --matcher {params.matcher} --mapper {params.mapper} --camera-model {params.camera_model}"
        " --min-registered {params.min_registered} --max-image-size {params.max_image_size}"
        " --max-size {params.max_size} --max-features {params.max_features}"
        " --first-octave={params.first_octave}"
        " --threads {threads}"
