from hpo.cli import run

# The guard matters: multiprocessing children re-import the main module.
if __name__ == "__main__":
    run()
