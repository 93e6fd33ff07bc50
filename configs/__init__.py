"""Pipeline configs shipped with bertrt (package `bertrt.configs`); paths inside a config are relative to it."""
