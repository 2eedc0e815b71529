"""Operations benchmarks (issue 17): overload at 2x capacity and a soak with abuse mixed in."""
