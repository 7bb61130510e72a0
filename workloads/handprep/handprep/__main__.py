import sys

from .preprocess import main

sys.exit(main())
