from hpo.cli import main

# The guard matters: multiprocessing children re-import the main module.
if __name__ == "__main__":
    raise SystemExit(main())
