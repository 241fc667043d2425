module plaza

go 1.26.8
